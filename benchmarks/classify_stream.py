"""Streaming classification at scale: N test images x C classes against an M-image support index, in row blocks.

    python benchmarks/classify_stream.py [--quick] [--seed 0] [--budget-mib 256] [--out benchmarks/results]

Default: 10,000 test images, 1,000 classes, a 100,000-image support index (synthetic CLIP-like vectors from
clipdex/synthetic/embeddings.py, stored through the raw-vector API ``index.add_vectors``). Steps, each timed:
  1. SuS-LC: text -> image search of every class query on the index (the store path of the pipeline,
     ``retrieval.classify.support.sus_lc_support``), then again from its cache;
  2. zero-shot and SuS-X (TIP-X, shipped defaults) through the pipeline's block runner
     (``retrieval.classify.methods.stream_probs``): blocks of B test rows, B chosen from the memory budget, TIP-X's
     global ranges collected in a first pass, so no N x M matrix ever exists.
Peak memory of step 2 is measured with tracemalloc (numpy reports its buffers to it) and compared with the size of
one dense N x M float32 matrix. Images/s counts classification of already-encoded features (encoding is the
image indexer's benchmark). Writes <out>/classify_stream.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

from clipdex.synthetic.embeddings import make_clip_like  # noqa: E402
from retrieval.algorithms import DEFAULT_TIPX  # noqa: E402
from retrieval.classify import methods as M  # noqa: E402
from retrieval.classify.accuracy import Evaluation  # noqa: E402
from retrieval.classify.support import sus_lc_support  # noqa: E402
from retrieval.index.directory import create_index  # noqa: E402

CONFIGS = {
    "default": dict(num_classes=1000, n_test=10_000, n_support=100_000, per_class=100),
    "quick": dict(num_classes=100, n_test=1_000, n_support=10_000, per_class=50),
}
QUERY = "A photo of a {}."


class QueryEncoder:
    """Stands in for the text encoder: the synthetic class query embedding for "A photo of a <class>."."""

    def __init__(self, names, embs):
        self.table = {QUERY.format(n): e for n, e in zip(names, embs)}

    def encode_texts(self, texts):
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def run(config: str, seed: int, budget_mib: int) -> dict:
    cfg = CONFIGS[config]
    C, N, S = cfg["num_classes"], cfg["n_test"], cfg["n_support"]
    t0 = time.perf_counter()
    d = make_clip_like(num_classes=C, n_test=N, n_support=S, n_shots=1, n_views=1, n_val=10, seed=seed)
    gen_s = time.perf_counter() - t0
    names = [f"class_{i}" for i in range(C)]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with create_index(Path(tmp) / "support.clipdex", dim=d.support_image_embs.shape[1], model="none") as ix:
            for s in range(0, S, 20_000):
                ix.add_vectors("images", d.support_image_embs[s:s + 20_000])
        index_s = time.perf_counter() - t
        from retrieval.index.directory import open_index

        with open_index(Path(tmp) / "support.clipdex") as ix:
            enc = QueryEncoder(names, d.class_query_embs)
            queries = [[QUERY.format(n)] for n in names]
            t = time.perf_counter()
            sup = sus_lc_support(ix, enc, names, queries, per_class=cfg["per_class"])
            sus_s = time.perf_counter() - t
            t = time.perf_counter()
            again = sus_lc_support(ix, enc, names, queries, per_class=cfg["per_class"])
            cached_s = time.perf_counter() - t
            assert again.from_cache and np.array_equal(again.ids, sup.ids)
    W = d.clip_weights
    runners = [M.ZeroShot(W), M.TipX("susx", W, sup.feats, sup.labels, DEFAULT_TIPX)]
    ev = Evaluation(names, [r.name for r in runners])
    budget = budget_mib << 20
    rows = M.block_rows(max(r.width for r in runners), budget)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t, cpu = time.perf_counter(), time.process_time()
    n_blocks = 0
    for sl, probs in M.stream_probs(runners, d.test_feats, budget):
        n_blocks += 1
        for name, p in probs.items():
            ev.update(name, p, d.test_labels[sl])
    classify_s, classify_cpu = time.perf_counter() - t, time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    summary = ev.summary(pairs=3)
    m = len(sup.ids)
    return dict(
        config=config, seed=seed, classes=C, test_images=N, support_index_images=S, per_class=cfg["per_class"],
        support_set=m, dim=int(W.shape[0]), budget_mib=budget_mib, block_rows=rows, blocks=n_blocks,
        seconds=dict(generate=round(gen_s, 1), index=round(index_s, 1), sus_lc=round(sus_s, 2),
                     sus_lc_cached=round(cached_s, 3), classify=round(classify_s, 1)),
        classify_cpu_seconds=round(classify_cpu, 1), images_per_s=round(N / classify_s, 1),
        images_per_cpu_s=round(N / classify_cpu, 1), cores=len(os.sched_getaffinity(0)),
        load_average_at_end=round(os.getloadavg()[0], 2),
        peak_traced_mib=round(peak / 2**20, 1),
        fixed_mib=dict(support_feats=round(sup.feats.nbytes / 2**20, 1), onehot=round(m * C * 4 / 2**20, 1),
                       log_signatures=round(m * C * 8 / 2**20, 1), test_feats=round(d.test_feats.nbytes / 2**20, 1)),
        block_bound_mib=round(rows * m * M.BYTES_PER_PAIR / 2**20, 1),
        dense_n_by_m_mib=round(N * m * 4 / 2**20, 1),
        max_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        accuracy={k: round(v["top1"], 2) for k, v in summary.items()},
        top5={k: round(v["top5"], 2) for k, v in summary.items()},
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 x 100 classes against 10,000 (seconds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-mib", type=int, default=256, help="working-memory budget of one block")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    res = run("quick" if args.quick else "default", args.seed, args.budget_mib)
    print(json.dumps(res, indent=2))
    name = "classify_stream_quick.json" if args.quick else "classify_stream.json"
    save_result(res, args.out / name, "classify_stream")
    print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

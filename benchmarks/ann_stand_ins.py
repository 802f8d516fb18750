"""How much easier the queries a table can offer are than users' text queries: the figures behind
``retrieval.ann.tuning.STAND_IN_MISS_SHARE``.

    python benchmarks/ann_stand_ins.py          # after `python benchmarks/ann.py` (reuses its data and index)

On the index ``benchmarks/ann.py`` built by clipdex's default path (realistic set, 1,000,000 x 512), the search
setting is swept along nprobe at the tuned refinement depth, and recall@10 against exact search is measured for
three kinds of queries: image-like (1,000 rows of the table, each query's own row left out: what tuning uses
without captions), captions (the same rows' ``text_emb`` vectors: what tuning uses with them) and the 1,000 fresh
text-like evaluation queries (what users send). The ratio of misses (1 - recall) of the text queries to each
stand-in's, at the same setting, is what a stand-in tuning must leave room for. Writes
benchmarks/results/ann_stand_ins.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

from retrieval.ann.exact import exact_search, recall_at_k  # noqa: E402
from retrieval.ann.selection import drop_self  # noqa: E402
from retrieval.index.directory import open_index  # noqa: E402

K = 10
NPROBES = (128, 192, 256, 384, 512, 768, 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/clipdex-ann-bench/realistic-1000000")
    ap.add_argument("--out", default=str(HERE / "results" / "ann_stand_ins.json"))
    args = ap.parse_args()
    work = Path(args.workdir)
    xb = np.load(work / "emb" / "img_emb" / "img_emb_0.npy", mmap_mode="r")
    xt = np.load(work / "emb" / "text_emb" / "text_emb_0.npy", mmap_mode="r")
    rows = np.sort(np.random.default_rng(11).choice(len(xb), 1000, replace=False))
    queries = {"image": np.ascontiguousarray(xb[rows]), "captions": np.ascontiguousarray(xt[rows]),
               "text": np.load(work / "queries.npy")}
    blocks = [(np.arange(s, min(s + 200_000, len(xb))), np.ascontiguousarray(xb[s:s + 200_000]))
              for s in range(0, len(xb), 200_000)]
    gt = {}
    for name, q in queries.items():
        _, I = exact_search(q, blocks, K + 1)
        gt[name] = drop_self(I, rows, K) if name == "image" else I[:, :K]
    ix = open_index(work / "clipdex")
    tuned = ix.store.ann_info("images")
    kf = tuned["params"].get("k_factor")
    sweep = []
    for nprobe in NPROBES:
        params = {"nprobe": nprobe, **({"k_factor": kf} if kf else {})}
        ix.store.set_search_params("images", params, persist=False)
        point = {"params": params}
        for name, q in queries.items():
            _, I = ix.store.search("images", q, K + (name == "image"))
            got = drop_self(I, rows, K) if name == "image" else I
            point[name] = round(recall_at_k(got, gt[name], K), 4)
        point["text_misses_per_image_miss"] = round((1 - point["text"]) / max(1 - point["image"], 1e-9), 2)
        point["text_misses_per_caption_miss"] = round((1 - point["text"]) / max(1 - point["captions"], 1e-9), 2)
        sweep.append(point)
        print(json.dumps(point), flush=True)
    ix.close()
    save_result({"index": tuned.get("factory"), "tuned": tuned.get("params"), "sweep": sweep}, args.out)


if __name__ == "__main__":
    main()

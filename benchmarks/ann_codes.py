"""Which codes an inverted file should scan on text-like queries: recall@10 and batch QPS at nprobe = nlist/16,
nlist/8, nlist/4 for IVF-Flat, IVF-SQ8 and fast-scan PQ refined on exact vectors (4 and 2 dimensions per 4-bit
sub-quantizer), on the realistic CLIP-like set (``clipdex.synthetic.ann_realistic``).

    python benchmarks/ann_codes.py [--n 200000] [--nlist 1024]

Measured here (200,000 x 512, 500 text-like queries, k_factor 32, 2 cores): PQ128x4fs (4 dims) tops out far below
IVF-Flat's recall; PQ256x4fs (2 dims) matches it at every nprobe at an order of magnitude more QPS, which is why
``retrieval.ann.plan.choose_index`` builds d/2 sub-quantizers. Prints one line per structure.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipdex.synthetic.ann_realistic import make_realistic_corpus  # noqa: E402
from retrieval.ann.exact import exact_search, recall_at_k  # noqa: E402

FACTORIES = ("IVF{nlist},Flat", "IVF{nlist},SQ8", "IVF{nlist},PQ{d4}x4fs,RFlat", "IVF{nlist},PQ{d2}x4fs,RFlat")


def main() -> None:
    import faiss  # heavy optional dependency, loaded when the benchmark runs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=500)
    a = ap.parse_args()
    corpus = make_realistic_corpus(a.n, a.dim, n_queries=a.queries, seed=0)
    x = np.concatenate(list(corpus.blocks()))
    q = corpus.queries
    _, gt = exact_search(q, [(np.arange(len(x)), x)], 10)
    train = x[:min(a.n, 50 * a.nlist)]
    for pattern in FACTORIES:
        factory = pattern.format(nlist=a.nlist, d4=a.dim // 4, d2=a.dim // 2)
        index = faiss.index_factory(a.dim, factory, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        index.train(train)
        index.add(x)
        build = time.perf_counter() - t0
        ivf = faiss.extract_index_ivf(index)
        if "RFlat" in factory:
            faiss.downcast_index(index).k_factor = 32
        points = []
        for nprobe in (a.nlist // 16, a.nlist // 8, a.nlist // 4):
            ivf.nprobe = nprobe
            t0 = time.perf_counter()
            _, I = index.search(q, 10)
            points.append(f"nprobe {nprobe}: recall@10 {recall_at_k(I, gt, 10):.3f}, "
                          f"{len(q) / (time.perf_counter() - t0):.0f} QPS")
        print(f"{factory} (built in {build:.0f} s): " + "; ".join(points), flush=True)


if __name__ == "__main__":
    main()

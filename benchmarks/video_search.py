"""Video search latency over 10,000 videos x 60 frames of synthetic vectors, p50 / p99 per query for each pooling.

    python benchmarks/video_search.py [--videos 10000] [--frames 60] [--dim 512] [--queries 100]
                                      [--out benchmarks/results]

The index is built through the raw-vector API (``Index.add_vectors`` on ``videos`` and ``frames``, model "none"),
then compacted; ``--ann flat`` (default) keeps exact search on both tables, ``--ann auto`` lets the store build
its ANN index on ``frames`` (600k rows; on 2 cores the HNSW build alone runs past 10 minutes). Video v has a
topic vector; each of its frames is the topic plus scene noise (6 scenes of 10 frames), unit norm; its ``videos``
vector is ``mean_pool_vectors`` of its frames, as the indexer stores it.
Queries are a random frame of a random video plus noise. Each query runs the whole ``search_videos`` pipeline
(frame ANN + video ANN candidates, gather the candidates' frames, pooled score, CLIPRerank, best frame) with
``--candidates`` (default 100), k = 10. Timing per query after 5 warm-up queries. The reference is a plain
``--table frames`` search (``search(ix, vectors=q, table="frames")``) of the same queries on the same index
(``x_frames_search``: video p50 / frames p50); ``frame_cache_read_s``: reading the frames into video search's
in-memory cache, once per open index. Writes <out>/video_search.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_io import save_result  # benchmarks/results_io.py, beside this script

from retrieval.index.directory import create_index  # noqa: E402
from retrieval.query.frame_cache import frame_cache  # noqa: E402
from retrieval.query.search import search  # noqa: E402
from retrieval.query.video import POOLS, VideoSearchOptions, search_videos  # noqa: E402


def build(path: Path, n_videos: int, n_frames: int, dim: int, seed: int = 0, block: int = 1000, ann: str = "flat"):
    """Write the synthetic index in blocks of ``block`` videos; returns (index, build seconds, optimise seconds)."""
    from retrieval.algorithms.video import mean_pool_vectors

    rng = np.random.default_rng(seed)
    ix = create_index(path, dim=dim, model="none")
    t0 = time.perf_counter()
    scenes = 6
    for start in range(0, n_videos, block):
        b = min(block, n_videos - start)
        topic = rng.standard_normal((b, 1, dim)).astype(np.float32)
        scene = rng.standard_normal((b, scenes, dim)).astype(np.float32)
        frames = topic + 0.8 * np.repeat(scene, n_frames // scenes + 1, axis=1)[:, :n_frames]
        frames += 0.3 * rng.standard_normal(frames.shape).astype(np.float32)
        frames /= np.linalg.norm(frames, axis=2, keepdims=True)
        pooled = np.stack([mean_pool_vectors(f) for f in frames])
        ids = ix.add_vectors("videos", pooled, {"path": [f"video_{start + i}.mp4" for i in range(b)],
                                                 "n_frames": np.full(b, n_frames, np.int32)})
        t = np.tile(np.arange(n_frames, dtype=np.float64), b)
        ix.add_vectors("frames", frames.reshape(-1, dim), {"video_id": np.repeat(ids, n_frames), "t": t,
                                                           "frame_index": (t * 25).astype(np.int64)})
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    from retrieval.ann.config import AnnConfig

    ix.optimize("frames", AnnConfig(kind=ann))
    ix.optimize("videos", AnnConfig(kind=ann))
    return ix, built, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=10_000)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--ann", default="flat", help="flat (exact frame search) or auto (the store's ANN choice)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        ix, build_s, opt_s = build(Path(tmp) / "videos.clipdex", args.videos, args.frames, args.dim,
                                   ann=args.ann)
        n_frames = ix.store.count("frames")
        picks = rng.integers(0, n_frames, args.queries + 5)
        from retrieval.store.base import arrow_to_vectors

        qv, _ = arrow_to_vectors(ix.store.take("frames", picks, ["vector"]).column("vector"), args.dim)
        qv = qv + 0.5 * rng.standard_normal(qv.shape).astype(np.float32) / np.sqrt(args.dim)
        truth = ix.store.take("frames", picks, ["video_id"]).column("video_id").to_numpy()
        results = {}
        plain = []  # the reference: a plain ``--table frames`` search of the same queries on the same index
        for j, q in enumerate(qv):
            t = time.perf_counter()
            search(ix, vectors=q, k=10, table="frames")
            if j >= 5:
                plain.append(time.perf_counter() - t)
        plain_p50 = float(np.percentile(np.array(plain) * 1000, 50))
        t = time.perf_counter()
        cached = frame_cache(ix) is not None  # read once per open index (video search's first query pays it)
        cache_s = time.perf_counter() - t
        print("frames search p50_ms", round(plain_p50, 1), flush=True)
        for pool in POOLS:
            opts = VideoSearchOptions(pool=pool, candidates=args.candidates)
            times, hits = [], 0
            for j, q in enumerate(qv):
                t = time.perf_counter()
                res = search_videos(ix, vectors=q, k=10, options=opts)
                dt = time.perf_counter() - t
                if j >= 5:
                    times.append(dt)
                    hits += int(res.column("id")[0].as_py() == truth[j])
            ms = np.array(times) * 1000
            results[pool] = {"p50_ms": round(float(np.percentile(ms, 50)), 1),
                             "p99_ms": round(float(np.percentile(ms, 99)), 1),
                             "mean_ms": round(float(ms.mean()), 1),
                             "source_video_at_rank1": round(hits / len(times), 3),
                             "x_frames_search": round(float(np.percentile(ms, 50)) / plain_p50, 2)}
            print(pool, results[pool], flush=True)
        ann = {t: ix.store.ann_info(t)["kind"] for t in ("frames", "videos")}
        ix.close()
    out = {"videos": args.videos, "frames_per_video": args.frames,
           "frames": n_frames, "dim": args.dim, "queries": args.queries, "candidates": args.candidates, "k": 10,
           "ann": ann, "frames_search_p50_ms": round(plain_p50, 1), "frame_cache": cached,
           "frame_cache_read_s": round(cache_s, 2), "build_s": round(build_s, 1), "optimize_s": round(opt_s, 1),
           "pooling": results}
    save_result(out, Path(args.out) / "video_search.json")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

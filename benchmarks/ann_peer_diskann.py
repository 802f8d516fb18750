"""The DiskANN peer of ``benchmarks/ann_10m.py``, run by another interpreter: diskannpy 0.7 requires numpy<2, which
this project's environment cannot take, so it lives in a venv of its own (the autofaiss peer's will do)::

    python -m venv /path/peers && /path/peers/bin/pip install "numpy<2" diskannpy
    python benchmarks/ann_10m.py --rows N --work DIR --methods diskann --peer-python /path/peers/bin/python

It builds DiskANN's SSD index (``diskannpy.build_disk_index``: a Vamana graph of degree 64, build complexity 100,
the vectors PQ-compressed into the run's search budget, ``search_memory_maximum``; 6 GB to build, the issue's
ceiling for an import) from the float16 ``img_emb/`` files written out as DiskANN's float32 ``.bin``, on every core,
then sweeps the search complexity L. The build runs in a child process under ``--build-limit`` seconds: past it the
peer is recorded as not built in that time (DiskANN's build cannot be interrupted from Python otherwise). It imports
only numpy and diskannpy, and prints one JSON line (the figures ``ann_10m.py`` records for every peer).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
from ann_peer_autofaiss import recall  # the other peer's script beside this one: it too imports only numpy first

K = 10


def write_bin(src: Path, out: Path) -> int:
    """The ``img_emb/*.npy`` files (in name order, as the table's ids) as one DiskANN ``.bin``: int32 rows, int32
    dims, then float32 rows; streamed a file at a time. Returns the row count."""
    files = sorted((src / "img_emb").glob("*.npy"))
    shapes = [np.load(f, mmap_mode="r").shape for f in files]
    n, d = sum(s[0] for s in shapes), shapes[0][1]
    with open(out, "wb") as f:
        np.array([n, d], np.int32).tofile(f)
        for path in files:
            x = np.load(path, mmap_mode="r")
            for s in range(0, len(x), 262_144):
                np.asarray(x[s:s + 262_144], np.float32).tofile(f)
    return n


def _build(data: str, folder: str, budget_gb: float, threads: int) -> None:
    import diskannpy

    diskannpy.build_disk_index(data=data, distance_metric="l2", index_directory=folder, complexity=100,
                               graph_degree=64, search_memory_maximum=budget_gb, build_memory_maximum=6.0,
                               num_threads=threads, vector_dtype=np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--memory-bytes", type=int, required=True)
    ap.add_argument("--build-limit", type=float, default=4 * 3600.0)
    args = ap.parse_args()
    out = args.work / "diskann_peer"
    out.mkdir(exist_ok=True)
    threads = os.cpu_count() or 1
    t0 = time.perf_counter()
    n = write_bin(args.work / "src", out / "vectors.bin")
    budget_gb = args.memory_bytes / 2**30
    child = mp.get_context("spawn").Process(target=_build, args=(str(out / "vectors.bin"), str(out), budget_gb,
                                                                  threads))
    child.start()
    child.join(args.build_limit)
    build_s = time.perf_counter() - t0
    if child.is_alive():
        child.kill()
        child.join()
        print(json.dumps({"absent": f"DiskANN's disk index was not built within {args.build_limit:.0f} s on "
                                    f"{threads} cores ({n:,} rows, PQ into {budget_gb:.2f} GB)",
                          "build_s": round(build_s, 1), "finished": False}))
        return
    if child.exitcode != 0:
        print(json.dumps({"error": f"the DiskANN build exited with {child.exitcode}", "build_s": round(build_s, 1)}))
        return
    (out / "vectors.bin").unlink()
    import diskannpy

    xq = np.load(args.work / "q.npy").astype(np.float32)
    gt = np.load(args.work / "gt.npy")
    index = diskannpy.StaticDiskIndex(index_directory=str(out), num_threads=threads,
                                      num_nodes_to_cache=min(n // 100, 100_000), distance_metric="l2",
                                      vector_dtype=np.float32, dimensions=xq.shape[1])
    sweep = []
    for L in (10, 20, 50, 100, 200, 400):
        index.batch_search(xq[:16], K, L, threads)
        t = time.perf_counter()
        I, _ = index.batch_search(xq, K, L, threads)
        sweep.append({"param": {"L": L}, "qps": len(xq) / (time.perf_counter() - t), "recall_at_10": recall(I, gt)})
    size = sum(f.stat().st_size for f in out.iterdir())
    print(json.dumps({"build_s": round(build_s, 1), "graph_degree": 64, "build_complexity": 100,
                      "pq_budget_gb": round(budget_gb, 3), "index_bytes": size, "sweep": sweep}))


if __name__ == "__main__":
    main()

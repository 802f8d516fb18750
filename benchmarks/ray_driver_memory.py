"""The Ray engine's driver memory as shards grow: its Python heap peak (tracemalloc) and Arrow's peak while it
indexes 8, 16, 32, 64 shards, each run into a fresh index, and the same with a table already holding rows.

    python benchmarks/ray_driver_memory.py                          # 8..64 shards x 16 drawn 64-px images
    python benchmarks/ray_driver_memory.py --shards 8,64 --per-shard 32

The driver holds the shard list, one id block start per shard and, per shard in flight, its fragments' JSON and
report; the rows go from the embedding actors to Lance fragments. A second pass per size re-indexes the same shards
after their records are deleted (what a killed run leaves): every sample is stored, so the driver's one pass over
``images.shard`` runs and each task reads its shard's rows; the driver still holds no row. Reported per run: the
samples, the driver's tracemalloc peak (Python objects; the model the driver loads for its input geometry is
loaded before the clock), the Arrow bytes the driver still holds after the run (0: no rows buffered), seconds, and
the load average (the machine is shared). Writes
benchmarks/results/ray_driver_memory.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

from clipdex.synthetic.shards import make_shards  # noqa: E402
from indexers.images import ImageIndexOptions  # noqa: E402 - after the path setup
from retrieval.index.directory import create_index, open_index  # noqa: E402
from retrieval.io.shards import discover_shards  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", default="8,16,32,64")
    ap.add_argument("--per-shard", type=int, default=16)
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--model", default="clipdex-tiny")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "ray_driver_memory.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import pyarrow as pa
    import ray  # heavy optional dependency (the [ray] extra)

    from indexers.ray_engine import RayOptions, index_shards_ray  # needs ray: imported once it is known present

    sizes = [int(x) for x in args.shards.split(",")]
    work = Path(tempfile.mkdtemp(prefix="ray_mem_"))
    make_shards(work / "shards", n_shards=max(sizes), per_shard=args.per_shard, failed_per_shard=1, size=args.size)
    every = discover_shards([str(work / "shards")])
    opts = ImageIndexOptions(batch_size=32, optimize=False)
    ray.init(num_cpus=args.cpus, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)

    def measured(ix, found) -> dict:
        tracemalloc.start()
        pool0, t0 = pa.total_allocated_bytes(), time.perf_counter()
        s = index_shards_ray(ix, found, opts, RayOptions(actors=1))
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"added": s.added, "unchanged": s.unchanged, "seconds": seconds, "driver_heap_peak_mb": peak / 2**20,
                "arrow_pool_mb": (pa.total_allocated_bytes() - pool0) / 2**20, "load": os.getloadavg()[0]}

    runs = []
    for n in sizes:
        found = dataclasses.replace(every, shards=every.shards[:n])
        path = work / f"ix{n}"
        with create_index(path, model=args.model) as ix:
            ix.encoder()  # the driver's model (input geometry) loaded before the clock
            fresh = measured(ix, found)
        with open_index(path, writable=True) as ix:
            ix.delete("shards", ix.store.scan("shards", ["id"]).__next__().column("id").to_pylist())
            ix.encoder()
            stored = measured(ix, found)
        runs.append({"shards": n, "samples": n * args.per_shard, "fresh": fresh, "all_stored": stored})
        print(json.dumps(runs[-1]), flush=True)
    ray.shutdown()
    save_result({"model": args.model, "per_shard": args.per_shard, "image_side": args.size, "cpus": args.cpus,
                 "runs": runs}, args.out, "ray_driver_memory")


if __name__ == "__main__":
    main()

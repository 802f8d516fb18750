"""Ray engine overhead: samples/s of ``--engine ray`` against the local engine on the same shards and model.

    python benchmarks/ray_index.py                                  # 4 shards x 64 images, clipdex-tiny
    python benchmarks/ray_index.py --shards 16 --per-shard 256 --size 256 --cpus 2

Both engines index the same img2dataset-style shards (``indexers.samples.shards.make_shards``: drawn JPEGs with
captions and json) into fresh Lance indexes; the local engine decodes in ``cpus - 1`` worker processes, the Ray
engine runs in a local Ray (``num_cpus=cpus``, 200 MB object store, no dashboard) with one embedding actor.
Reported: samples/s of each (images and their captions embedded, rows committed), the Ray run measured without
and with starting Ray, and the overhead ``1 - ray/local``. Writes benchmarks/results/ray_index.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from indexers.images import ImageIndexOptions  # noqa: E402 - after the path setup
from indexers.samples.shards import make_shards  # noqa: E402
from indexers.shards import index_shards  # noqa: E402
from retrieval.index.directory import create_index  # noqa: E402
from retrieval.io.shards import discover_shards  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=int, default=64)
    ap.add_argument("--size", type=int, default=128, help="image side in pixels")
    ap.add_argument("--model", default="clipdex-tiny")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=str(HERE / "results" / "ray_index.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray  # heavy optional dependency (the [ray] extra)
    import torch  # heavy: set the local engine's threads like one Ray actor's

    from indexers.ray_engine import RayOptions, index_shards_ray

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="ray_index_"))
    make_shards(work / "shards", n_shards=args.shards, per_shard=args.per_shard, failed_per_shard=1, size=args.size)
    found = discover_shards([str(work / "shards")])
    opts = ImageIndexOptions(batch_size=args.batch_size, workers=max(1, args.cpus - 1), optimize=False)
    samples = args.shards * args.per_shard

    with create_index(work / "local", model=args.model) as ix:
        ix.encoder()  # the model loaded before the clock starts, as each Ray actor loads it in its constructor
        t0 = time.perf_counter()
        local = index_shards(ix, found, opts)
        t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    t_start = time.perf_counter() - t0
    with create_index(work / "ray", model=args.model) as ix:
        ix.encoder()
        t0 = time.perf_counter()
        remote = index_shards_ray(ix, found, opts, RayOptions(actors=1))
        t_ray = time.perf_counter() - t0
    ray.shutdown()
    assert local.added == remote.added == samples, (local.added, remote.added)
    res = {"samples": samples, "shards": args.shards, "image_side": args.size, "model": args.model,
           "cpus": args.cpus, "batch_size": args.batch_size,
           "local_samples_per_s": samples / t_local, "ray_samples_per_s": samples / t_ray,
           "ray_samples_per_s_with_startup": samples / (t_ray + t_start), "ray_startup_s": t_start,
           "overhead": 1 - t_local / t_ray, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()

"""Ray engine overhead: samples/s of ``--engine ray`` against the local engine on the same shards and model.

    python benchmarks/ray_index.py                                  # 4 shards x 64 images, clipdex-tiny
    python benchmarks/ray_index.py --shards 16 --per-shard 256 --size 256 --cpus 2

Both engines index the same img2dataset-style shards (``clipdex.synthetic.shards.make_shards``: drawn JPEGs with
captions and json) into fresh Lance indexes; the local engine decodes in ``cpus - 1`` worker processes, the Ray
engine runs in a local Ray (``num_cpus=cpus``, 200 MB object store, no dashboard) with one embedding actor.
Each engine indexes ``--shards`` shards and then twice as many (fresh indexes each time), so that its fixed cost
(Ray: planning the dataset, starting the actor, which imports torch and loads the model) and its marginal rate
separate (fixed cost = t(n) - (t(2n) - t(n))). Reported: the seconds of each run, samples/s of each on the larger
run, the overhead ``1 - ray/local`` on it, and Ray's fixed cost. At small sizes the difference t(2n) - t(n) is
within the noise of a shared machine, so the marginal rate is not reported; measure it with runs of tens of
thousands of samples. ``ray.init`` and a first one-shard Ray run (Ray's worker start-up) are timed apart. Writes
benchmarks/results/ray_index.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

from clipdex.synthetic.shards import make_shards  # noqa: E402
from indexers.images import ImageIndexOptions  # noqa: E402 - after the path setup
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

    from indexers.ray_engine import RayOptions, index_shards_ray  # needs ray: imported once it is known present

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="ray_index_"))
    make_shards(work / "shards", n_shards=2 * args.shards, per_shard=args.per_shard, failed_per_shard=1,
                size=args.size)
    every = discover_shards([str(work / "shards")])
    half = dataclasses.replace(every, shards=every.shards[:args.shards])
    opts = ImageIndexOptions(batch_size=args.batch_size, workers=max(1, args.cpus - 1), optimize=False)

    def timed(run, found, name: str) -> float:
        with create_index(work / name, model=args.model) as ix:
            ix.encoder()  # the model loaded before the clock starts (each Ray actor loads it in its constructor)
            t0 = time.perf_counter()
            s = run(ix, found)
            assert s.added == len(found.shards) * args.per_shard, s
            return time.perf_counter() - t0

    local = [timed(lambda ix, f: index_shards(ix, f, opts), f, f"local{i}") for i, f in enumerate((half, every))]
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    t_start = time.perf_counter() - t0
    timed(lambda ix, f: index_shards_ray(ix, f, opts, RayOptions(actors=1)),
          dataclasses.replace(every, shards=every.shards[:1]), "warmup")  # Ray's first dataset: worker start-up
    remote = [timed(lambda ix, f: index_shards_ray(ix, f, opts, RayOptions(actors=1)), f, f"ray{i}")
              for i, f in enumerate((half, every))]
    ray.shutdown()
    n = args.shards * args.per_shard
    res = {"samples": [n, 2 * n], "shards": [args.shards, 2 * args.shards], "image_side": args.size,
           "model": args.model, "cpus": args.cpus, "batch_size": args.batch_size,
           "local_s": local, "ray_s": remote, "ray_init_s": t_start,
           "local_samples_per_s": 2 * n / local[1], "ray_samples_per_s": 2 * n / remote[1],
           "overhead": 1 - local[1] / remote[1],
           "ray_fixed_cost_s": remote[0] - (remote[1] - remote[0])}
    save_result(res, args.out, "ray_index")
    print(json.dumps(res))


if __name__ == "__main__":
    main()

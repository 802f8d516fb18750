"""Ray engine overhead for images, texts and videos: ``index images|texts|videos --engine ray`` against the local
engine on the same files, model and 2 cores (issue 22's figures).

    nice -n 10 python benchmarks/ray_overhead.py                    # random:ViT-B-32, 2 CPUs, about 6 minutes
    python benchmarks/ray_overhead.py --model clipdex-tiny --quick  # a check that it runs

Each engine indexes a set of inputs into a fresh Lance index, then a set twice as large (fresh again), so that the
fixed cost (Ray: starting the actor, which imports torch and loads the model; planning the dataset) and the marginal
rate separate: fixed = t(n) - (t(2n) - t(n)). The runs are interleaved (local n, Ray n, local 2n, Ray 2n, kind after
kind) so that both engines see the same load on a shared machine. Reported per kind:

- ``overhead_with_startup``: Ray's 2n run plus ``ray.init`` against the local 2n run (what one run costs);
- ``overhead_marginal``: (Ray 2n - Ray n) / (local 2n - local n) - 1, the per-row overhead with every fixed cost
  (``ray.init``, actor start, the local engine's model load) taken out.

Images: img2dataset shards (``make_shards``), the local engine decoding in one worker process; texts: JSONL files of
captions, each numbered (the generated captions repeat, and the local engine embeds a text once per run where the
Ray engine embeds it once per file: 800 captions hold 119 distinct texts, which made Ray look ten times slower per row);
videos: the generated corpus (``make_videos``) sampled at ``--fps``, copied once or twice. torch uses one thread in
both engines and Ray runs one actor of one CPU (the local engines embed in one thread too); Ray runs locally
(``num_cpus`` 2, 200 MB object store). ``ray.init`` and a warm-up run are timed apart. The load average is
recorded before and after. Writes benchmarks/results/ray_overhead.json (``--name``; ``--kinds`` to measure some).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

from clipdex.synthetic.shards import make_shards  # noqa: E402 - after the path setup
from clipdex.synthetic.texts import captions  # noqa: E402
from clipdex.synthetic.videos import make_videos  # noqa: E402
from indexers.images import ImageIndexOptions  # noqa: E402
from indexers.shards import index_shards  # noqa: E402
from indexers.text_sources import discover_texts  # noqa: E402
from indexers.texts import TextIndexOptions, index_texts  # noqa: E402
from indexers.video_decode import SamplingPlan  # noqa: E402
from indexers.videos import VideoIndexOptions, index_videos  # noqa: E402
from retrieval.index.directory import create_index  # noqa: E402
from retrieval.io.shards import discover_shards  # noqa: E402
from retrieval.io.sources import VIDEO_EXTENSIONS, discover  # noqa: E402


def text_files(root: Path, files: int, rows: int, offset: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        with open(root / f"t{offset + i:04d}.jsonl", "w") as f:
            for j, t in enumerate(captions(rows, seed=offset + i)):  # numbered: every text distinct, so that
                f.write(json.dumps({"text": f"{t}, number {offset + i} {j}"}) + "\n")  # both engines embed each
    return root


def video_files(root: Path, copies: int, corpus: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for c in range(copies):
        for v in corpus.rglob("*"):
            if v.is_file():
                shutil.copyfile(v, root / f"{c}_{v.name}")
    return root


def timed_run(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return round(time.perf_counter() - t0, 2)


def overheads(local: list[float], ray: list[float], ray_init: float) -> dict:
    """Seconds of the n and 2n runs of each engine -> the overhead figures (see the module's docstring)."""
    (t1, t2), (r1, r2) = local, ray
    return {"ray_fixed_s": round(r1 - (r2 - r1), 2), "local_fixed_s": round(t1 - (t2 - t1), 2),
            "overhead_with_startup": round((r2 + ray_init) / t2 - 1, 3),
            "overhead_without_init": round(r2 / t2 - 1, 3),
            "overhead_marginal": round((r2 - r1) / (t2 - t1) - 1, 3) if t2 > t1 else None}


def measure(kind: str, sets, run_local, run_ray, work: Path, model: str, ray_init: float) -> dict:
    """Interleaved: local n, Ray n, local 2n, Ray 2n, each into a fresh index."""
    out: dict = {"local": [], "ray": []}
    for size, src in sets:
        for engine, run in (("local", run_local), ("ray", run_ray)):
            with create_index(work / f"{kind}_{engine}_{size}", model=model) as ix:
                out[engine].append(timed_run(lambda ix=ix, src=src, run=run: run(ix, src)))
    out.update(overheads(out["local"], out["ray"], ray_init))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random:ViT-B-32")
    ap.add_argument("--shards", type=int, default=2, help="image shards of the n run")
    ap.add_argument("--per-shard", type=int, default=40)
    ap.add_argument("--files", type=int, default=4, help="text files of the n run")
    ap.add_argument("--rows", type=int, default=60, help="captions per text file")
    ap.add_argument("--fps", type=float, default=3.0, help="video frames sampled per second (corpus: 24 s)")
    ap.add_argument("--kinds", default="images,texts,videos", help="which of images, texts, videos to measure")
    ap.add_argument("--name", default="ray_overhead", help="the result's name (benchmarks/results/NAME.json)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray  # heavy optional dependency (the [ray] extra)
    import torch  # heavy: one thread in both engines

    from indexers.ray_engine import RayOptions, index_shards_ray  # needs ray: imported once it is known present
    from indexers.ray_texts import index_texts_ray
    from indexers.ray_videos import index_videos_ray

    torch.set_num_threads(1)
    if args.quick:
        args.shards, args.per_shard, args.files, args.rows, args.fps = 1, 8, 2, 8, 1.0
    work = Path(tempfile.mkdtemp(prefix="ray_overhead_"))
    load0 = os.getloadavg()
    ropts = RayOptions(actors=1, cpus_per_actor=1)
    try:
        t_init = timed_run(lambda: ray.init(num_cpus=2, object_store_memory=200 << 20, include_dashboard=False,
                                            log_to_driver=False))
        topts = TextIndexOptions(batch_size=32, optimize=False)
        warm = text_files(work / "warm", 1, 4, 900)
        with create_index(work / "warm_ix", model=args.model) as ix:
            t_warm = timed_run(lambda: index_texts_ray(ix, discover_texts([str(warm)]), topts, ropts))

        kinds, out = args.kinds.split(","), {}
        if "images" in kinds:
            make_shards(work / "shards", n_shards=2 * args.shards, per_shard=args.per_shard, failed_per_shard=0)
            every = discover_shards([str(work / "shards")])
            half = discover_shards([str(p) for p in sorted((work / "shards").glob("*.tar"))[:args.shards]])
            iopts = ImageIndexOptions(batch_size=32, workers=1, optimize=False)
            out["images"] = measure("images", [(1, half), (2, every)], lambda ix, f: index_shards(ix, f, iopts),
                                    lambda ix, f: index_shards_ray(ix, f, iopts, ropts), work, args.model, t_init)
            out["images"]["samples"] = [args.shards * args.per_shard, 2 * args.shards * args.per_shard]
        if "texts" in kinds:
            small = text_files(work / "t1", args.files, args.rows, 0)
            large = text_files(work / "t2", 2 * args.files, args.rows, 0)
            out["texts"] = measure("texts", [(1, small), (2, large)],
                                   lambda ix, src: index_texts(ix, discover_texts([str(src)]), topts),
                                   lambda ix, src: index_texts_ray(ix, discover_texts([str(src)]), topts, ropts),
                                   work, args.model, t_init)
            out["texts"]["texts"] = [args.files * args.rows, 2 * args.files * args.rows]
        if "videos" in kinds:
            make_videos(work / "corpus")
            corpus = work / "corpus"
            v1, v2 = video_files(work / "v1", 1, corpus), video_files(work / "v2", 2, corpus)
            vopts = VideoIndexOptions(sampling=SamplingPlan("fps", args.fps), workers=1, batch_size=16,
                                      optimize=False)
            frames: list[int] = []

            def local_videos(ix, src):
                frames.append(index_videos(ix, discover([src], VIDEO_EXTENSIONS), vopts).frames)

            out["videos"] = measure("videos", [(1, v1), (2, v2)], local_videos,
                                    lambda ix, src: index_videos_ray(ix, discover([src], VIDEO_EXTENSIONS), vopts,
                                                                     ropts), work, args.model, t_init)
            out["videos"].update(videos=[len(list(v1.iterdir())), len(list(v2.iterdir()))], frames=frames)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    result = {"model": args.model, "torch_threads": 1, "ray_actors": 1, "ray_init_s": t_init,
              "ray_warmup_s": t_warm, **out, "load_average_before": [round(v, 1) for v in load0],
              "load_average_after": [round(v, 1) for v in os.getloadavg()]}
    print(save_result(result, name=args.name + ("_quick" if args.quick else "")))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

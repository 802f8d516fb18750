"""Ray engine overhead for texts and videos: ``index texts|videos --engine ray`` against the local engine on the same
files and model (issue 22's figures; images: benchmarks/ray_index.py).

    python benchmarks/ray_overhead.py                              # random:ViT-B-32, 2 CPUs, about 3 minutes
    python benchmarks/ray_overhead.py --model clipdex-tiny --quick # a check that it runs

Each engine indexes a set of files into a fresh Lance index, then a set twice as large (fresh again), so that the
fixed cost (Ray: starting the actor, which imports torch and loads the model) and the marginal rate separate:
fixed = t(n) - (t(2n) - t(n)); the overhead is reported on the larger run and on the marginal rates. Texts:
``--files`` JSONL files of ``--rows`` captions each; videos: the generated corpus (``make_videos``), copied once or
twice. torch uses one thread in both engines; Ray runs locally (``num_cpus`` 2, 200 MB object store, one actor);
``ray.init`` and a warm-up run are timed apart. The load average is recorded. Writes
benchmarks/results/ray_overhead.json.
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

from clipdex.synthetic.texts import captions  # noqa: E402 - after the path setup
from clipdex.synthetic.videos import make_videos  # noqa: E402
from indexers.text_sources import discover_texts  # noqa: E402
from indexers.texts import TextIndexOptions, index_texts  # noqa: E402
from indexers.videos import VideoIndexOptions, index_videos  # noqa: E402
from retrieval.index.directory import create_index  # noqa: E402
from retrieval.io.sources import VIDEO_EXTENSIONS, discover  # noqa: E402


def text_files(root: Path, files: int, rows: int, offset: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        with open(root / f"t{offset + i:04d}.jsonl", "w") as f:
            for t in captions(rows, seed=offset + i):
                f.write(json.dumps({"text": t}) + "\n")
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


def measure(kind: str, make_sets, run_local, run_ray, work: Path, model: str) -> dict:
    out = {}
    for engine, run in (("local", run_local), ("ray", run_ray)):
        times = []
        for size, src in make_sets:
            with create_index(work / f"{kind}_{engine}_{size}", model=model) as ix:
                times.append(timed_run(lambda ix=ix, src=src, run=run: run(ix, src)))
        out[engine] = times
    (t1, t2), (r1, r2) = out["local"], out["ray"]
    fixed = round(r1 - (r2 - r1), 2)
    out.update(overhead_large=round(r2 / t2 - 1, 3), ray_fixed_s=fixed,
               overhead_marginal=round((r2 - r1) / (t2 - t1) - 1, 3) if t2 > t1 else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random:ViT-B-32")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray  # heavy optional dependency (the [ray] extra)
    import torch  # heavy: one thread in both engines

    from indexers.ray_texts import index_texts_ray  # needs ray: imported once it is known present
    from indexers.ray_videos import index_videos_ray

    torch.set_num_threads(1)
    files, rows = (2, 8) if args.quick else (args.files, args.rows)
    work = Path(tempfile.mkdtemp(prefix="ray_overhead_"))
    load0 = os.getloadavg()
    try:
        t_init = timed_run(lambda: ray.init(num_cpus=2, object_store_memory=200 << 20, include_dashboard=False,
                                            log_to_driver=False))
        topts = TextIndexOptions(batch_size=32, optimize=False)
        vopts = VideoIndexOptions(workers=1, batch_size=16, optimize=False)
        warm = text_files(work / "warm", 1, 4, 900)
        with create_index(work / "warm_ix", model=args.model) as ix:
            t_warm = timed_run(lambda: index_texts_ray(ix, discover_texts([str(warm)]), topts))
        small = text_files(work / "t1", files, rows, 0)
        large = text_files(work / "t2", 2 * files, rows, 0)
        texts = measure("texts", [(1, small), (2, large)],
                        lambda ix, src: index_texts(ix, discover_texts([str(src)]), topts),
                        lambda ix, src: index_texts_ray(ix, discover_texts([str(src)]), topts), work, args.model)
        texts["texts"] = [files * rows, 2 * files * rows]
        make_videos(work / "corpus")
        corpus = work / "corpus"
        v1, v2 = video_files(work / "v1", 1, corpus), video_files(work / "v2", 2, corpus)
        videos = measure("videos", [(1, v1), (2, v2)],
                         lambda ix, src: index_videos(ix, discover([src], VIDEO_EXTENSIONS), vopts),
                         lambda ix, src: index_videos_ray(ix, discover([src], VIDEO_EXTENSIONS), vopts), work,
                         args.model)
        videos["videos"] = [len(list(v1.iterdir())), len(list(v2.iterdir()))]
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    result = {"model": args.model, "torch_threads": 1, "ray_init_s": t_init, "ray_warmup_s": t_warm,
              "texts": texts, "videos": videos, "load_average_before": [round(v, 1) for v in load0],
              "load_average_after": [round(v, 1) for v in os.getloadavg()]}
    print(save_result(result, name="ray_overhead_quick" if args.quick else "ray_overhead"))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

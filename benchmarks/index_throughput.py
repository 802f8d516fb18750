"""Indexing pipeline throughput against the bare model forward pass (issue 2's benchmark).

    python benchmarks/index_throughput.py                      # ViT-B-32 architecture, random weights, this device
    python benchmarks/index_throughput.py --model clipdex-tiny --images 2000

Both sides use the same model, batch size and device:
- model:    ``encoder.encode_prepared`` on pre-made uint8 batches (preprocessing done, so only the forward pass,
            the on-device normalisation and the copy back);
- pipeline: ``clipdex index images`` end to end on a folder of generated JPEGs (read, hash, decode, resize in
            worker processes; encode; write to LanceDB), model load and index creation excluded.
The ratio pipeline/model says whether the model ever waits for decoding (goal: >= 0.9).
Results go to benchmarks/results/index_throughput[-<device>].json.
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

from clipdex.synthetic import make_noisy_jpegs  # noqa: E402


def bench_model(encoder, n: int, batch: int) -> float:
    h, w = encoder.prep.size
    x = np.random.default_rng(0).integers(0, 255, (batch, h, w, 3), dtype=np.uint8)
    encoder.encode_prepared(x)  # warm-up
    if encoder.device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    t0 = time.perf_counter()
    done = 0
    while done < n:
        encoder.encode_prepared(x)
        done += batch
    return done / (time.perf_counter() - t0)


def bench_pipeline(encoder, folder: Path, batch: int, workers: int | None, backend: str) -> dict:
    from indexers.images import ImageIndexOptions, index_images
    from retrieval.index.directory import create_index
    from retrieval.io.sources import IMAGE_EXTENSIONS, discover

    with tempfile.TemporaryDirectory() as tmp:
        ix = create_index(Path(tmp) / "bench.clipdex", dim=encoder.dim, model=str(encoder.spec), backend=backend)
        found = discover([folder], IMAGE_EXTENSIONS)
        t0 = time.perf_counter()
        summary = index_images(ix, found, ImageIndexOptions(batch_size=batch, workers=workers, optimize=False))
        elapsed = time.perf_counter() - t0
        ix.close()
    return {"images": summary.added, "elapsed_s": elapsed, "images_per_s": summary.added / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random:ViT-B-32")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", default=None)
    ap.add_argument("--backend", default="lance")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from retrieval.encode.encoder import load_encoder
    from retrieval.io.workers import default_workers

    encoder = load_encoder(args.model, device=args.device, precision=args.precision)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "imgs"
        make_noisy_jpegs(folder, args.images)
        bench_pipeline(encoder, folder, args.batch_size, args.workers, args.backend)  # warm-up (spawn, caches)
        # model, pipeline, model: the bracketing runs show whether the machine's load changed meanwhile
        before = bench_model(encoder, args.images, args.batch_size)
        pipe = bench_pipeline(encoder, folder, args.batch_size, args.workers, args.backend)
        after = bench_model(encoder, args.images, args.batch_size)
        model_ips = (before + after) / 2
    result = {
        "model": args.model, "device": encoder.device,
        "precision": encoder.precision, "batch_size": args.batch_size, "images": args.images,
        "image_size": [640, 480], "workers": args.workers if args.workers is not None else default_workers(),
        "backend": args.backend, "torch_threads": torch.get_num_threads(),
        "model_images_per_s": round(model_ips, 2), "model_runs_images_per_s": [round(before, 2), round(after, 2)],
        "pipeline_images_per_s": round(pipe["images_per_s"], 2),
        "ratio": round(pipe["images_per_s"] / model_ips, 3),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    out = Path(args.out or Path(__file__).parent / "results" /
               f"index_throughput{'-cuda' if encoder.device.startswith('cuda') else ''}.json")
    save_result(result, out, "index_throughput")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

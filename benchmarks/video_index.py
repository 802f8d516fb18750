"""Video indexer throughput against the image pipeline on the same number of frames (the cost of decoding video).

    python benchmarks/video_index.py                       # clipdex-tiny and ViT-B-32 (random weights), CPU or CUDA
    python benchmarks/video_index.py --models clipdex-tiny --videos 10 --seconds 20

Corpus: ``--videos`` generated videos of ``--seconds`` s at 25 fps, 320x240 (mpeg4 in mp4), indexed at --fps 1,
so the model sees videos x seconds frames while the decoder decodes 25x as many. The image side gets the very
same pictures (the frame on screen at each sampled second) as 320x240 JPEGs, indexed by ``index_images``. Both run
end to end (decode in worker processes, encode, write to LanceDB), model load and index creation excluded, same
batch size and workers. Also timed: the bare forward pass on pre-made batches (``encode_prepared``) and the video
indexer with ``--keyframes``. ViT-B-32 is built with ``open_clip.create_model_and_transforms("ViT-B-32",
pretrained=None)`` (random weights: the compute of the real model) and handed to the indexers directly.
Writes <out>/video_index.json.
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

from clipdex.synthetic.videos import make_video, scene_frame  # noqa: E402
from indexers.images import ImageIndexOptions, index_images  # noqa: E402
from indexers.video_decode import SamplingPlan  # noqa: E402
from indexers.videos import VideoIndexOptions, index_videos  # noqa: E402
from retrieval.index.directory import create_index  # noqa: E402
from retrieval.io.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, discover  # noqa: E402

SIZE = (320, 240)


def make_corpus(root: Path, n_videos: int, seconds: int) -> int:
    """Videos under root/videos and the same sampled pictures as JPEGs under root/images; returns the frame count."""
    from PIL import Image

    for v in range(n_videos):
        make_video(root / "videos" / f"v{v:03d}.mp4", 500 + v, seconds, 25, SIZE)
        (root / "images" / f"v{v:03d}").mkdir(parents=True, exist_ok=True)
        for s in range(seconds):
            Image.fromarray(scene_frame(500 + v, float(s), SIZE)).save(root / "images" / f"v{v:03d}" / f"{s:04d}.jpg",
                                                                       quality=90)
    return n_videos * seconds


def vit_b32_random(device: str | None):
    import open_clip
    import torch

    from retrieval.encode.encoder import ClipEncoder, default_device
    from retrieval.models.factory import ModelSpec

    device = device or default_device()
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    spec = ModelSpec("registered", arch="ViT-B-32 (random weights)")
    return ClipEncoder(spec, model.to(device).eval(), preprocess, open_clip.get_tokenizer("ViT-B-32"), device,
                       "fp16" if device.startswith("cuda") else "fp32")


def _index(encoder, run, tmp: Path) -> float:
    """Seconds of one indexing run into a fresh index that uses ``encoder`` (model load excluded)."""
    ix = create_index(tmp / f"ix{time.monotonic_ns()}", dim=encoder.dim, model="clipdex-tiny")
    ix.encoder = lambda device=None, precision=None: encoder  # the benchmark's encoder, whatever the manifest says
    t = time.perf_counter()
    run(ix)
    dt = time.perf_counter() - t
    ix.close()
    return dt


def bench(encoder, root: Path, n: int, batch: int, workers: int | None) -> dict:
    videos = discover([root / "videos"], VIDEO_EXTENSIONS)
    images = discover([root / "images"], IMAGE_EXTENSIONS)
    vopts = VideoIndexOptions(batch_size=batch, workers=workers, optimize=False)
    kopts = VideoIndexOptions(sampling=SamplingPlan("keyframes", 0), batch_size=batch, workers=workers, optimize=False)
    iopts = ImageIndexOptions(batch_size=batch, workers=workers, optimize=False)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        h, w = encoder.prep.size
        x = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
        encoder.encode_prepared(x)  # warm-up
        t = time.perf_counter()
        for _ in range(max(1, n // batch)):
            encoder.encode_prepared(x)
        out["model_frames_per_s"] = round(max(1, n // batch) * batch / (time.perf_counter() - t), 1)
        _index(encoder, lambda ix: index_images(ix, images, iopts), tmp)  # warm-up: worker spawn, file cache
        out["images_per_s"] = round(n / _index(encoder, lambda ix: index_images(ix, images, iopts), tmp), 1)
        summary = {}
        out["video_frames_per_s"] = round(n / _index(
            encoder, lambda ix: summary.update(index_videos(ix, videos, vopts).as_dict()), tmp), 1)
        assert summary["frames"] == n, summary
        keys = {}
        secs = _index(encoder, lambda ix: keys.update(index_videos(ix, videos, kopts).as_dict()), tmp)
        out["keyframes"] = {"frames": keys["frames"], "frames_per_s": round(keys["frames"] / secs, 1)}
    out["video_vs_images"] = round(out["video_frames_per_s"] / out["images_per_s"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="clipdex-tiny,ViT-B-32")
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    from retrieval.encode.encoder import load_encoder

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        n = make_corpus(Path(tmp), args.videos, args.seconds)
        for name in args.models.split(","):
            enc = vit_b32_random(args.device) if name == "ViT-B-32" else load_encoder(name, device=args.device)
            results[name] = {"device": enc.device, **bench(enc, Path(tmp), n, args.batch_size, args.workers)}
            print(name, results[name], flush=True)
    out = {"videos": args.videos, "seconds_each": args.seconds, "source_fps": 25,
           "size": list(SIZE), "sampled_frames": n, "decoded_frames": n * 25, "batch_size": args.batch_size,
           "workers": args.workers, "models": results}
    name = "video_index" + ("-cuda" if any(r["device"].startswith("cuda") for r in results.values()) else "")
    save_result(out, Path(args.out) / f"{name}.json", "video_index")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Text encoding throughput by long-text strategy: texts/s for short (10-token) and long (200-token) texts.

    python benchmarks/text_encode.py [--quick] [--device cpu|cuda] [--out benchmarks/results]

Models: clipdex-tiny (2 text layers, width 64) and the ViT-B-32 architecture with random weights (12 text layers,
width 512: the compute of the real ViT-B-32 text tower; weights do not change the speed), built directly with
``open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)`` and ``retrieval.encode.encoder.ClipEncoder``.
Strategies: chunk (200 tokens -> 4 windows of 75, overlap 16), longclip (stretched 248-token context, one window),
truncate (one 77-token window, counted). Timing covers tokenisation, encoding and pooling (``encode_long_texts``),
after one warm-up call, best of ``--repeats``. Writes <out>/text_encode.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

from retrieval.encode.encoder import ClipEncoder, default_device, load_encoder  # noqa: E402
from retrieval.encode.text import STRATEGIES, encode_long_texts  # noqa: E402
from retrieval.models.factory import ModelSpec  # noqa: E402

VOCAB = ["dog", "cat", "tree", "house", "river", "car", "bird", "red", "blue", "small", "large", "green", "runs",
         "sleeps", "under", "beside"]


def make_texts(n: int, n_tokens: int, seed: int) -> list[str]:
    """n texts of exactly ``n_tokens`` content tokens (one token per vocabulary word), seeded."""
    rng = np.random.default_rng(seed)
    return [" ".join(VOCAB[i] for i in rng.integers(0, len(VOCAB), n_tokens)) for _ in range(n)]


def vit_b32_random(device: str, precision: str) -> ClipEncoder:
    import open_clip
    import torch

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model = model.to(device).eval()
    spec = ModelSpec("registered", arch="ViT-B-32 (random weights)")
    return ClipEncoder(spec, model, preprocess, open_clip.get_tokenizer("ViT-B-32"), device, precision)


def texts_per_s(encoder, texts, strategy: str, repeats: int, batch_size: int) -> tuple[float, dict]:
    encode_long_texts(encoder, texts[:8], strategy, batch_size=batch_size, warn=False)  # warm-up (and the stretch)
    best = float("inf")
    for _ in range(repeats):
        if encoder.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        t = time.perf_counter()
        res = encode_long_texts(encoder, texts, strategy, batch_size=batch_size, warn=False)
        if encoder.device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    info = {"windows_per_text": float(res.n_chunks.mean()), "n_tokens": int(res.n_tokens[0]),
            "truncated": int(res.truncated)}
    return len(texts) / best, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer texts (a smoke run)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", default=None, help="fp32 | fp16 | bf16 (default fp16 on CUDA, fp32 on CPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    device = args.device or default_device()
    precision = args.precision or ("fp16" if device.startswith("cuda") else "fp32")
    sizes = {"clipdex-tiny": 256 if args.quick else 2048, "ViT-B-32": 32 if args.quick else 128}
    if device.startswith("cuda"):
        sizes = {k: v * 8 for k, v in sizes.items()}
    results = []
    for name in sizes:
        if name == "clipdex-tiny":
            enc = load_encoder("clipdex-tiny", device, precision)
        else:
            enc = vit_b32_random(device, precision)
        for length in (10, 200):
            texts = make_texts(sizes[name], length, seed=length)
            for strategy in STRATEGIES:
                rate, info = texts_per_s(enc, texts, strategy, args.repeats, args.batch_size)
                results.append({"model": name, "text_tokens": length, "strategy": strategy, "texts": len(texts),
                                "texts_per_s": round(rate, 1), **info})
                print(f"{name:13s} {length:4d} tokens  {strategy:9s} {rate:10.1f} texts/s  "
                      f"({info['windows_per_text']:.0f} windows/text)", flush=True)
    import torch

    out = {"device": device, "precision": precision, "batch_size": args.batch_size, "repeats": args.repeats,
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None, "results": results}
    suffix = "" if device == "cpu" else "_" + device.split(":")[0]
    path = save_result(out, Path(args.out) / f"text_encode{suffix}.json", "text_encode")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""ClipEncoder: one open_clip model, its preprocessing and tokenizer; batched, L2-normalised float32 output.

``load_encoder(spec)`` builds it once per process (later calls with the same arguments return the same object).
On CUDA the forward pass runs under autocast (fp16 by default); on the CPU in float32. Outputs are always
``(n, d) float32`` numpy arrays with unit rows.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
from typing import Callable, Iterable, Sequence

import numpy as np

from retrieval.algorithms.zeroshot import CLIP_LOGIT_SCALE
from retrieval.cancel import checkpoint
from retrieval.encode.text import encode_long_texts
from retrieval.encode.text_tower import ensure_text_tower
from retrieval.errors import InvalidInput
from retrieval.io.imageprep import ImagePrep
from retrieval.models.factory import ModelSpec, create_model, parse_model_spec

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")


def default_device() -> str:
    import torch  # heavy: imported when a model is loaded, not when the package is

    return "cuda" if torch.cuda.is_available() else "cpu"


class ClipEncoder:
    """A loaded CLIP model. Build with ``load_encoder``; thread-safe for concurrent calls (one forward at a time)."""

    def __init__(self, spec: ModelSpec, model, preprocess, tokenizer, device: str, precision: str):
        import torch  # heavy: imported when a model is loaded, not when the package is

        self.spec = spec
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.precision = precision
        cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        size = cfg.get("size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.prep = ImagePrep(size=size, resize_mode=cfg.get("resize_mode", "shortest"),
                              interpolation=cfg.get("interpolation", "bicubic"), fill_color=cfg.get("fill_color", 0))
        self._mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), device=device).view(1, 3, 1, 1)
        self.context_length = int(getattr(tokenizer, "context_length", None) or getattr(model, "context_length", 77))
        self._lock = threading.Lock()
        self._variants: dict = {}
        with torch.inference_mode():
            probe = self.encode_texts(["a"])
        self.dim = int(probe.shape[1])

    # -- helpers ---------------------------------------------------------------------------------------------
    def _autocast(self):
        import torch  # heavy: imported when a model is loaded, not when the package is

        if self.device.startswith("cuda") and self.precision in ("fp16", "bf16"):
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    @staticmethod
    def _finish(feats) -> np.ndarray:
        feats = feats.float()
        feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    # -- images ----------------------------------------------------------------------------------------------
    def encode_prepared(self, pixels) -> np.ndarray:
        """(B, H, W, 3) uint8 pixels from ``ImagePrep.prepare`` -> (B, d) float32 unit rows.

        Conversion to float and normalisation run on the model's device, so decoding workers only ship bytes.
        """
        import torch  # heavy: imported when a model is loaded, not when the package is

        checkpoint()   # a cancelled request's work stops between batches
        batch = torch.as_tensor(np.ascontiguousarray(pixels))
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected (B, H, W, 3) uint8 pixels, got {tuple(batch.shape)}")
        with self._lock, torch.inference_mode():
            x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
            x = (x - self._mean) / self._std
            with self._autocast():
                feats = self.model.encode_image(x)
            return self._finish(feats)

    def encode_images(self, images: Sequence, batch_size: int = 64) -> np.ndarray:
        """list of PIL images -> (n, d) float32 unit rows."""
        out = [self.encode_prepared(np.stack([self.prep.prepare(im) for im in images[i:i + batch_size]]))
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    # -- texts -----------------------------------------------------------------------------------------------
    def token_ids(self, texts: Iterable[str]) -> list[list[int]]:
        """Content token ids of each text (no start/end tokens, no truncation)."""
        enc = getattr(self.tokenizer, "encode", None)
        if enc is None:
            raise NotImplementedError("this model's tokenizer does not expose token ids")
        return [enc(t) for t in texts]

    def encode_token_batch(self, tokens, model=None) -> np.ndarray:
        """(B, context) int64 token tensor (start/end tokens included) -> (B, d) float32 unit rows.

        ``model``: another text tower to run instead of the encoder's own (a variant from ``variant``, e.g. a
        Long-CLIP-stretched copy); it runs on the encoder's device, under its lock and autocast.
        """
        import torch  # heavy: imported when a model is loaded, not when the package is

        checkpoint()   # a cancelled request's work stops between batches (e.g. a classifier's prompts)
        model = self.model if model is None else model
        with self._lock, torch.inference_mode():
            with self._autocast():
                feats = model.encode_text(torch.as_tensor(tokens).to(self.device))
            return self._finish(feats)

    def variant(self, name: str, build: Callable[["ClipEncoder"], object]):
        """A derived object of this encoder (e.g. a stretched copy of its model), built once by ``build(self)``
        under the encoder's lock and kept for the encoder's lifetime."""
        found = self._variants.get(name)
        if found is None:
            with self._lock:
                found = self._variants.get(name)
                if found is None:
                    found = self._variants[name] = build(self)
        return found

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature ``exp(logit_scale)`` (100 for OpenAI CLIP, 28.5 for clipdex-tiny); 100
        when the model has none."""
        scale = getattr(self.model, "logit_scale", None)
        return CLIP_LOGIT_SCALE if scale is None else float(math.exp(float(scale.detach().float().reshape(-1)[0])))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """list of str -> (n, d) float32 unit rows. Texts longer than the context are truncated by the tokenizer;
        use ``encode_long_texts`` (``retrieval.encode.text``) to pool or stretch them instead."""
        if isinstance(texts, str):
            raise InvalidInput("encode_texts takes a list of strings, not a single string")
        out = [self.encode_token_batch(self.tokenizer(list(texts[i:i + batch_size])))
               for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, getattr(self, "dim", 0)), np.float32)

    def encode_long_texts(self, texts: Sequence[str], strategy: str = "chunk", **kwargs):
        """Texts of any length, never truncated silently -> ``TextEncoding`` (vectors, n_tokens, n_chunks, ...);
        strategy chunk | longclip | truncate (see ``retrieval.encode.text.encode_long_texts``)."""
        return encode_long_texts(self, texts, strategy, **kwargs)


@functools.lru_cache(maxsize=4)
def _load(spec_str: str, device: str, precision: str) -> ClipEncoder:
    spec = parse_model_spec(spec_str)
    model, preprocess, tokenizer = create_model(spec, device=device)
    log.info("loaded %s on %s (%s)", spec, device, precision)
    encoder = ClipEncoder(spec, model, preprocess, tokenizer, device, precision)
    ensure_text_tower(encoder)  # once per model and machine: later text queries need no torch
    return encoder


def load_encoder(spec: str | ModelSpec | None = None, device: str | None = None,
                 precision: str | None = None) -> ClipEncoder:
    """Load a CLIP model once per process and return its encoder.

    ``spec``: see ``retrieval.models.factory``; ``device``: "cuda", "cuda:1", "cpu" (default: CUDA when present);
    ``precision``: "fp32", "fp16" or "bf16" autocast on CUDA (default fp16 on CUDA, fp32 on the CPU).
    """
    device = device or default_device()
    if precision is None:
        precision = "fp16" if device.startswith("cuda") else "fp32"
    if precision not in PRECISIONS:
        raise InvalidInput(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return _load(str(parse_model_spec(spec)), device, precision)

"""Augmented views of few-shot images, as Tip-Adapter and GDA build their caches (Zhang et al., ECCV 2022,
gaopengcuhk/Tip-Adapter ``main.py``; Wang et al., ICLR 2024, mrflogs/ICLR24): RandomResizedCrop(scale 0.5–1,
ratio 3/4–4/3, bicubic) then a horizontal flip with probability 0.5, 10 views per image.

The crop sampler follows the usual RandomResizedCrop recipe (10 tries of area/aspect sampling, then a centre crop
clamped to the ratio range) but draws from a numpy Generator seeded by ``seed``, so views are reproducible
without touching torch's global RNG.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

DEFAULT_VIEWS = 10


def _crop_box(width: int, height: int, rng: np.random.Generator, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)):
    area = width * height
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_r))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def augmented_views(pil_image: Image.Image, n_views: int = DEFAULT_VIEWS, size: int = 224,
                    seed: int = 0) -> list[Image.Image]:
    """``n_views`` RGB PIL views of ``size`` x ``size``: RandomResizedCrop(scale 0.5–1) + random horizontal flip.

    Deterministic for a given (image, n_views, size, seed). Feed the views to the encoder, average the raw features
    per image and normalise (Tip-Adapter keys, :func:`retrieval.algorithms.tip_adapter.build_cache`), or keep each
    normalised view as a sample (GDA).
    """
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    img = pil_image.convert("RGB")
    rng = np.random.default_rng(seed)
    views = []
    for _ in range(n_views):
        box = _crop_box(img.width, img.height, rng)
        view = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
        if rng.random() < 0.5:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        views.append(view)
    return views

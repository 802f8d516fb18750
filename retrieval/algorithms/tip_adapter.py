"""Tip-Adapter, the training-free cache model (Zhang et al., ECCV 2022; gaopengcuhk/Tip-Adapter).

Notation: f (N, D) test features, keys F (M, D) cache keys, L (M, C) one-hot cache values, W (D, C) text classifier.
    A = f Fᵀ                                   (N, M) cosine affinities
    logits = 100 · f W + alpha · exp(−beta · (1 − A)) L
No softmax on the cache term (as in the reference ``main.py``). Cache keys: each shot encoded under 10 random
augmentations (:func:`retrieval.algorithms.augment.augmented_views`); the raw features averaged, then normalised
(:func:`build_cache`).
"""

from __future__ import annotations

import logging

import numpy as np

from retrieval.algorithms.arrays import as_f32, as_i64, grid_accuracy, grid_pick, l2_normalize, one_hot

log = logging.getLogger(__name__)

DEFAULT_ALPHA = 1.17  # paper's ImageNet value
DEFAULT_BETA = 1.0


def build_cache(view_feats, labels, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Cache keys and values from augmented shot features.

    view_feats: (n, V, D) raw (un-normalised) features of V augmented views per shot, or (n, D) for one view.
    labels: (n,) int class positions. Returns ``keys = norm(mean_v view_feats)`` (n, D) float32 and one-hot
    ``values`` (n, C) float32.
    """
    x = as_f32(view_feats, "view_feats")
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3:
        raise ValueError(f"view_feats must be (n, V, D) or (n, D), got {x.shape}")
    keys = l2_normalize(x.mean(axis=1)).astype(np.float32)
    values = one_hot(as_i64(labels, "labels"), num_classes)
    if values.shape[0] != keys.shape[0]:
        raise ValueError(f"{keys.shape[0]} shots but {values.shape[0]} labels")
    return keys, values


def check_cache_inputs(test_feats, keys, values, clip_weights, names=("cache_keys", "cache_values")):
    """Inputs of a cache model as float32: test (N, D), keys (M, D), values (M, C), clip_weights (D, C); a shape
    that disagrees raises ``ValueError`` naming the arrays (``names``: what the caller calls keys and values)."""
    f = as_f32(test_feats, "test_feats", ndim=2)
    k = as_f32(keys, names[0], ndim=2)
    v = as_f32(values, names[1], ndim=2)
    w = as_f32(clip_weights, "clip_weights", ndim=2)
    if not (f.shape[1] == k.shape[1] == w.shape[0]):
        raise ValueError(f"dims disagree: test {f.shape}, {names[0]} {k.shape}, clip_weights {w.shape}")
    if v.shape != (k.shape[0], w.shape[1]):
        raise ValueError(f"{names[1]} {v.shape} must be (M={k.shape[0]}, C={w.shape[1]})")
    return f, k, v, w


def cache_logits(affinity: np.ndarray, cache_values: np.ndarray, beta: float) -> np.ndarray:
    """Cache term ``exp(−beta · (1 − A)) L``: affinity A (N, M), values L (M, C) -> (N, C) float32."""
    a = as_f32(affinity, "affinity", ndim=2)
    return (np.exp(-beta * (1.0 - a)) @ as_f32(cache_values, "cache_values", ndim=2)).astype(np.float32)


def tip_adapter_logits(test_feats, cache_keys, cache_values, clip_weights, alpha: float = DEFAULT_ALPHA,
                       beta: float = DEFAULT_BETA) -> np.ndarray:
    """Tip-Adapter logits (N, C) = ``100 · f W + alpha · exp(−beta (1 − f Fᵀ)) L``.

    test_feats (N, D), cache_keys F (M, D), cache_values L (M, C), clip_weights W (D, C). alpha = 0 gives zero-shot.
    """
    f, k, v, w = check_cache_inputs(test_feats, cache_keys, cache_values, clip_weights)
    zs = 100.0 * f @ w
    return (zs + alpha * cache_logits(f @ k.T, v, beta)).astype(np.float32)


def paper_grid(scale: float, steps: int, start: float = 0.1) -> np.ndarray:
    """Tip-Adapter's search grid ``start + i · (scale − start) / steps`` for i < steps (float64)."""
    return start + np.arange(steps, dtype=np.float64) * (scale - start) / steps


def tip_adapter_search(val_feats, val_labels, cache_keys, cache_values, clip_weights,
                       search_scale: tuple[float, float] = (7, 3),
                       search_step: tuple[int, int] = (200, 20), rule: str = "best",
                       with_zero: bool = False) -> tuple[float, float, float]:
    """Grid-search (alpha, beta) on a labelled split, as the reference ``search_hp``.

    beta_i = 0.1 + i (s_b − 0.1)/n_b (i < n_b), alpha_j = 0.1 + j (s_a − 0.1)/n_a (j < n_a), with
    ``search_scale = (s_b, s_a)`` and ``search_step = (n_b, n_a)`` (ImageNet: (7, 3), (200, 20)).
    Vectorised over alpha. Ties keep the first (beta ascending, then alpha ascending), like the reference loop.
    ``with_zero`` adds alpha = 0 (zero-shot CLIP); ``rule="1se"`` picks the smallest alpha within one standard error
    of the best (:func:`~retrieval.algorithms.arrays.one_se_pick`) instead of the best (the reference's ``"best"``).
    Returns ``(best_alpha, best_beta, best_acc)`` with acc in [0, 1].
    """
    f, k, v, w = check_cache_inputs(val_feats, cache_keys, cache_values, clip_weights)
    y = as_i64(val_labels, "val_labels")
    if y.shape[0] != f.shape[0]:
        raise ValueError(f"{f.shape[0]} val feats but {y.shape[0]} labels")
    betas = paper_grid(search_scale[0], int(search_step[0]))
    alphas = paper_grid(search_scale[1], int(search_step[1]))
    if with_zero:
        alphas = np.concatenate([[0.0], alphas])
    zs = (100.0 * f @ w).astype(np.float32)
    aff = f @ k.T
    accs = np.concatenate([grid_accuracy(zs, cache_logits(aff, v, float(beta))[None], alphas[:, None], y)
                           for beta in betas])  # (n_b * n_a,), beta-major
    i, j = divmod(grid_pick(accs, y.shape[0], np.tile(alphas, len(betas)), rule), len(alphas))
    best = (float(alphas[j]), float(betas[i]), float(accs[i * len(alphas) + j]))
    log.debug("tip_adapter_search: alpha=%.3f beta=%.3f acc=%.4f", *best)
    return best

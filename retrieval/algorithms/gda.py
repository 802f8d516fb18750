"""GDA: Gaussian discriminant analysis on CLIP features (Wang, Liang, Sheng, He, Wang, Tan, "A Hard-to-Beat
Baseline for Training-free CLIP-based Adaptation", ICLR 2024, arXiv:2402.04087; mrflogs/ICLR24).

Shots are encoded under 10 augmentations, each view a separate normalised sample: X (n, D), labels y (n,).
    μ_c = mean of class c rows;  U = rows minus their class mean;  Σ = cov(U) (unbiased, n − 1)
    P = D · pinv((n − 1) Σ + tr(Σ) I)                 shrinkage ("KS") estimate of the precision
    W = P μᵀ (D, C);  b_c = log(1/C) − ½ μ_c P μ_cᵀ
    logits = 100 f W_text + alpha (f W + b)
alpha is searched on a labelled split over powers of ten (:func:`gda_search_alpha`).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from retrieval.algorithms.arrays import as_f32, as_i64, grid_accuracy, grid_pick

log = logging.getLogger(__name__)

DEFAULT_ALPHAS = tuple(10.0 ** i for i in range(-4, 3))  # 1e-4 ... 100 (the reference also tries 1e3, 1e4)


def gda_fit(feats, labels, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit the shared-covariance Gaussian classifier: feats (n, D), labels (n,) -> (W (D, C), b (C,)) float32.

    Every class needs at least one sample. Computed in float64.
    """
    x = np.asarray(as_f32(feats, "feats", ndim=2), dtype=np.float64)
    y = as_i64(labels, "labels")
    n, d = x.shape
    if y.shape[0] != n:
        raise ValueError(f"{n} feats but {y.shape[0]} labels")
    if n < 2:
        raise ValueError("GDA needs at least 2 samples")
    counts = np.bincount(y, minlength=num_classes)
    if counts.shape[0] != num_classes or np.any(counts == 0):
        raise ValueError(f"every class in [0, {num_classes}) needs a sample; counts {counts.tolist()}")
    mu = np.zeros((num_classes, d))
    np.add.at(mu, y, x)
    mu /= counts[:, None]
    u = x - mu[y]
    sigma = np.cov(u, rowvar=False)  # unbiased; U's column means are zero up to rounding
    prec = d * np.linalg.pinv((n - 1) * sigma + np.trace(sigma) * np.eye(d), hermitian=True)
    w = prec @ mu.T  # (D, C)
    b = np.log(1.0 / num_classes) - 0.5 * np.einsum("cd,de,ce->c", mu, prec, mu)
    return w.astype(np.float32), b.astype(np.float32)


def gda_logits(test_feats, clip_weights, W, b, alpha: float) -> np.ndarray:
    """``100 f W_text + alpha (f W + b)``: test_feats (N, D), clip_weights (D, C), W (D, C), b (C,) -> (N, C).

    alpha = 0 gives zero-shot.
    """
    f = as_f32(test_feats, "test_feats", ndim=2)
    wt = as_f32(clip_weights, "clip_weights", ndim=2)
    w = as_f32(W, "W", ndim=2)
    bb = as_f32(b, "b", ndim=1)
    return (100.0 * f @ wt + alpha * (f @ w + bb)).astype(np.float32)


def gda_search_alpha(val_feats, val_labels, clip_weights, W, b,
                     alphas: Sequence[float] = DEFAULT_ALPHAS, rule: str = "best") -> tuple[float, float]:
    """Pick alpha by validation accuracy: returns ``(best_alpha, best_acc)``; ties keep the first (smallest) alpha.
    ``rule="1se"``: the smallest alpha within one standard error of the best (``arrays.one_se_pick``)."""
    f = as_f32(val_feats, "val_feats", ndim=2)
    y = as_i64(val_labels, "val_labels")
    zs = 100.0 * f @ as_f32(clip_weights, "clip_weights", ndim=2)
    gda = f @ as_f32(W, "W", ndim=2) + as_f32(b, "b", ndim=1)
    a = np.asarray(alphas, dtype=np.float64)
    accs = grid_accuracy(zs, gda[None], a[:, None], y)
    j = grid_pick(accs, y.shape[0], a, rule)
    return float(a[j]), float(accs[j])

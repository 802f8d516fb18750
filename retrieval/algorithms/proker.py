"""ProKeR: proximal kernel ridge regression around the zero-shot classifier (Bendou, Ouasfi, Gripon, Boukhayma,
"ProKeR: A Kernel Perspective on Few-Shot Adaptation of Large Vision-Language Models", CVPR 2025).

Shots S (n, D) with one-hot labels Y (n, C); test x (N, D); W (D, C) the text classifier.
    f0(x)   = x W                               raw cosines, no ×100
    k(x, s) = exp(−β (1 − x · s))
    α       = (K_SS / λ + I)⁻¹ (Y − f0(S))      (n, C)
    logits  = f0(x) + k(x, S) α
Defaults transferred from ImageNet (RN50, 16 shots): β = 1.7, λ = 0.1.
"""

from __future__ import annotations

import numpy as np

from retrieval.algorithms.arrays import as_f32, as_i64, one_hot

DEFAULT_BETA = 1.7
DEFAULT_LAMBDA = 0.1


def proker_fit(shot_feats, shot_labels, clip_weights, beta: float = DEFAULT_BETA,
               lam: float = DEFAULT_LAMBDA) -> np.ndarray:
    """``α = (K_SS / λ + I)⁻¹ (Y − f0(S))``: shot_feats (n, D), shot_labels (n,), clip_weights (D, C) -> (n, C)
    float64. Solved once; :func:`proker_predict` then scores any number of test blocks with it."""
    s = as_f32(shot_feats, "shot_feats", ndim=2)
    w = as_f32(clip_weights, "clip_weights", ndim=2)
    y = one_hot(as_i64(shot_labels, "shot_labels"), w.shape[1]).astype(np.float64)
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    s64, w64 = np.asarray(s, dtype=np.float64), np.asarray(w, dtype=np.float64)
    k_ss = np.exp(-beta * (1.0 - s64 @ s64.T))
    return np.linalg.solve(k_ss / lam + np.eye(s.shape[0]), y - s64 @ w64)


def proker_predict(shot_feats, clip_weights, alpha, test_feats, beta: float = DEFAULT_BETA) -> np.ndarray:
    """``f0(x) + k(x, S) α``: shot_feats (n, D), clip_weights (D, C), alpha (n, C), test_feats (N, D) -> (N, C)."""
    args = ((shot_feats, "shot_feats"), (clip_weights, "clip_weights"), (test_feats, "test_feats"))
    s64, w64, x64 = (np.asarray(as_f32(a, name, ndim=2), dtype=np.float64) for a, name in args)
    return (x64 @ w64 + np.exp(-beta * (1.0 - x64 @ s64.T)) @ np.asarray(alpha, dtype=np.float64)).astype(np.float32)


def proker_logits(shot_feats, shot_labels, clip_weights, test_feats, beta: float = DEFAULT_BETA,
                  lam: float = DEFAULT_LAMBDA) -> np.ndarray:
    """ProKeR logits (N, C): shot_feats (n, D), shot_labels (n,), clip_weights (D, C), test_feats (N, D).

    Solves ``(K_SS / λ + I) α = Y − f0(S)`` in float64 (K_SS is PSD, so the system is well posed for λ > 0).
    As λ -> 0 the correction vanishes (logits -> f0); as β -> 0 the kernel is all ones and every test row gets the
    same class offset ``1ᵀ α``. Equal to :func:`proker_predict` after :func:`proker_fit` (for test rows in blocks).
    """
    alpha = proker_fit(shot_feats, shot_labels, clip_weights, beta, lam)
    return proker_predict(shot_feats, clip_weights, alpha, test_feats, beta)

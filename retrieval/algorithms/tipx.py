"""TIP-X: Tip-Adapter plus image-text-distribution affinities (Udandarao et al., "SuS-X: Training-Free Name-Only
Transfer of Vision-Language Models", ICCV 2023; vishaal27/SuS-X, ``tipx.py``).

Notation: f (N, D) test features, F (M, D) support features, L (M, C) one-hot support labels, W (D, C) text
classifier, τ the signature temperature (0.5).
    S(x)   = softmax(x W / τ)                     signatures over classes (raw cosines / τ, no ×100)
    M_KL   = KL(S(f_i) ‖ S(F_j))                  (N, M)
    A      = f Fᵀ                                 (N, M)
    logits = 100 f W + alpha exp(−beta (1 − A)) L − gamma rescale_to_range(M_KL, R) L,  R = ref_affinity or A.
Differences from the reference: the KL matrix is complete (the reference's 100-row blocks leave the last N mod 100
rows zero), and the searches are vectorised over (alpha, gamma).
"""

from __future__ import annotations

import logging

import numpy as np

from retrieval.algorithms.arrays import as_f32, as_i64, grid_accuracy, grid_pick, log_softmax, softmax
from retrieval.algorithms.tip_adapter import cache_logits, check_cache_inputs

log = logging.getLogger(__name__)

DEFAULT_TEMPERATURE = 0.5

#: Fixed values for name-only use (no labelled split to search on), all at the low end of the paper's grids.
#: beta = 2: a wide image-image kernel, so every image of a class's ~100 retrieved support images votes — retrieved
#:   sets are noisy (web images, wrong matches), so averaging over them beats trusting the single nearest one.
#: alpha = 10: the cache term sums over all support images of a class; with beta = 2 its class-to-class gaps are
#:   then of the same order as the zero-shot logit gaps (100 · cosine gaps of a few hundredths), so neither
#:   side drowns the other. Tip-Adapter's alpha ≈ 1.17 was set for 16 shots/class with beta = 1, not for 100.
#: gamma = 0.5: the KL term re-expresses the same zero-shot signatures, so it weighs less than the cache.
#: gamma = 0 reduces TIP-X to Tip-Adapter. Checked on clipdex/synthetic/embeddings.py (two misalignment levels, two
#: support sizes, two seeds): never below zero-shot, and better than (alpha, beta, gamma) = (1, 5.5, 0.1) or
#: (1, 1, 0.1); not yet checked on real datasets — search (tipx_search) when a labelled split exists.
DEFAULT_TIPX = dict(alpha=10.0, beta=2.0, gamma=0.5)


def tipx_signatures(feats, clip_weights, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """Signatures ``S(x) = softmax(x W / τ)``: feats (N, D), W (D, C) -> (N, C) float32 rows summing to 1."""
    f = as_f32(feats, "feats", ndim=2)
    w = as_f32(clip_weights, "clip_weights", ndim=2)
    return softmax((f @ w) / temperature, axis=1).astype(np.float32)


def _signature_logs(feats, clip_weights, temperature):
    f = as_f32(feats, "feats", ndim=2)
    w = as_f32(clip_weights, "clip_weights", ndim=2)
    return log_softmax((f @ w).astype(np.float64) / temperature, axis=1)


def _kl_from_logs(logp: np.ndarray, logq: np.ndarray) -> np.ndarray:
    p = np.exp(logp)
    neg_entropy = np.sum(np.where(p > 0, p * logp, 0.0), axis=1)  # Σ_c p log p, with 0 log 0 = 0
    return neg_entropy[:, None] - p @ logq.T


def kl_matrix(p, q) -> np.ndarray:
    """``M_KL[i, j] = Σ_c p[i,c] (log p[i,c] − log q[j,c]) = KL(p_i ‖ q_j)``: p (N, C), q (M, C) -> (N, M) float32.

    Rows are probability vectors. Computed in float64 for all N rows at once; ``0 · log 0 = 0``; entries of q
    are clipped at 1e-300 so a zero in q gives a large finite value instead of ``inf``.
    """
    p64 = np.asarray(as_f32(p, "p", ndim=2), dtype=np.float64)
    q64 = np.asarray(as_f32(q, "q", ndim=2), dtype=np.float64)
    if p64.shape[1] != q64.shape[1]:
        raise ValueError(f"p {p64.shape} and q {q64.shape} have different class counts")
    logp = np.log(np.clip(p64, 1e-300, None))
    logq = np.log(np.clip(q64, 1e-300, None))
    return _kl_from_logs(logp, logq).astype(np.float32)


def rescale_to_range(x, ref, x_range=None) -> np.ndarray:
    """``(x − min x) / (max x − min x) · (max ref − min ref) + min ref`` with global min/max; float32 like x.

    A constant x maps to ``min ref`` everywhere. ``x_range = (lo, hi)`` replaces ``(min x, max x)``: a caller that
    evaluates x in row blocks passes the range of the whole matrix, so every block is mapped the same way.
    """
    x64 = np.asarray(as_f32(x, "x"), dtype=np.float64)
    r = as_f32(ref, "ref")
    lo, hi = (float(x64.min()), float(x64.max())) if x_range is None else (float(x_range[0]), float(x_range[1]))
    rlo, rhi = float(r.min()), float(r.max())
    span = hi - lo
    unit = (x64 - lo) / span if span > 0 else np.zeros_like(x64)
    return (unit * (rhi - rlo) + rlo).astype(np.float32)


def _prepare(test_feats, support_feats, support_onehot, clip_weights):
    return check_cache_inputs(test_feats, support_feats, support_onehot, clip_weights,
                              names=("support_feats", "support_onehot"))


def tipx_log_signatures(feats, clip_weights, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """``log S(x) = log_softmax(x W / τ)``: feats (N, D), W (D, C) -> (N, C) float64.

    Computing it once for the support set lets :func:`tipx_logits` run over many blocks of test rows without
    recomputing the (M, C) support signatures each time (``support_logsig``).
    """
    return _signature_logs(feats, clip_weights, temperature)


def tipx_kl(test_feats, support_feats, clip_weights, temperature: float = DEFAULT_TEMPERATURE,
            support_logsig=None) -> np.ndarray:
    """Raw ``M_KL[i, j] = KL(S(f_i) ‖ S(F_j))`` exactly as :func:`tipx_logits` computes it: (N, M) float64.

    A caller evaluating TIP-X in row blocks takes the min/max of this over all blocks and passes them as
    ``kl_range``. ``support_logsig``: :func:`tipx_log_signatures` of the support set, when precomputed.
    """
    f = as_f32(test_feats, "test_feats", ndim=2)
    w = as_f32(clip_weights, "clip_weights", ndim=2)
    logq = _signature_logs(support_feats, w, temperature) if support_logsig is None else np.asarray(support_logsig)
    return _kl_from_logs(_signature_logs(f, w, temperature), logq)


def tipx_kl_term(test_feats, support_feats, support_onehot, clip_weights, temperature=DEFAULT_TEMPERATURE,
                 ref_affinity=None, *, kl_range=None, support_logsig=None) -> np.ndarray:
    """The KL term ``rescale_to_range(M_KL, R) L`` (N, C), R = ``ref_affinity`` or A = f Fᵀ.

    ``kl_range = (lo, hi)``: the min/max of M_KL to rescale with (default: this call's own matrix).
    """
    f, s, l, w = _prepare(test_feats, support_feats, support_onehot, clip_weights)
    kl = tipx_kl(f, s, w, temperature, support_logsig)
    ref = f @ s.T if ref_affinity is None else as_f32(ref_affinity, "ref_affinity")
    return (rescale_to_range(kl, ref, kl_range) @ l).astype(np.float32)


def tipx_logits(test_feats, support_feats, support_onehot, clip_weights, alpha: float = DEFAULT_TIPX["alpha"],
                beta: float = DEFAULT_TIPX["beta"], gamma: float = DEFAULT_TIPX["gamma"],
                temperature: float = DEFAULT_TEMPERATURE, ref_affinity=None, *, kl_range=None,
                support_logsig=None) -> np.ndarray:
    """TIP-X logits (N, C) = ``100 f W + alpha exp(−beta (1 − A)) L − gamma rescale_to_range(M_KL, R) L``.

    test_feats f (N, D), support_feats F (M, D), support_onehot L (M, C), clip_weights W (D, C); A = f Fᵀ;
    M_KL = :func:`kl_matrix` of the signatures; R = ``ref_affinity`` (any array; only its min/max are used) or A.
    gamma = 0 gives Tip-Adapter; alpha = gamma = 0 gives zero-shot.
    Row blocks: the min/max in the rescaling are global over the matrices, so evaluating N rows in blocks gives
    the whole-matrix result only when every block gets the whole run's ``kl_range = (min, max)`` of
    :func:`tipx_kl` and ``ref_affinity = [min A, max A]``; ``support_logsig`` (:func:`tipx_log_signatures` of F)
    avoids recomputing the support signatures per block.
    """
    f, s, l, w = _prepare(test_feats, support_feats, support_onehot, clip_weights)
    aff = f @ s.T
    out = 100.0 * f @ w + alpha * cache_logits(aff, l, beta)
    if gamma != 0:
        out = out - gamma * tipx_kl_term(f, s, l, w, temperature, aff if ref_affinity is None else ref_affinity,
                                         kl_range=kl_range, support_logsig=support_logsig)
    return out.astype(np.float32)


def tipx_search(val_feats, val_labels, support_feats, support_onehot, clip_weights,
                temperature: float = DEFAULT_TEMPERATURE,
                search_scale: tuple[float, float, float] = (50, 50, 30),
                search_step: tuple[int, int, int] = (20, 200, 50), rule: str = "best",
                with_zero: bool = False) -> dict:
    """Grid-search TIP-X's (alpha, beta, gamma) on a labelled split (SuS-X's ``search_hp``).

    Grids (``search_scale = (s_a, s_b, s_g)``, ``search_step = (n_a, n_b, n_g)``, paper: (50, 50, 30),
    (20, 200, 50)): alpha_j = 0.1 + j (s_a − 0.1)/n_a, beta_i = 1 + i (s_b − 1)/n_b, gamma_g = 0.1 + g (s_g − 0.1)/n_g.
    For each beta the cache term is computed once and all (alpha, gamma) pairs are scored in one vectorised pass;
    the KL term does not depend on the grid and is computed once (R = the validation affinity, as the reference).
    Pass a smaller ``search_step`` for a coarser, faster search. Ties keep the first in (beta, alpha, gamma) order.
    ``with_zero`` adds alpha = 0 and gamma = 0 to the grids (their meeting point is zero-shot CLIP); ``rule="1se"``
    picks by :func:`~retrieval.algorithms.arrays.one_se_pick` with complexity alpha/s_a + gamma/s_g (the weakest
    augmentation within one standard error of the best) instead of the best (the paper's ``"best"``).
    Returns ``dict(alpha, beta, gamma, acc)``.
    """
    f, s, l, w = _prepare(val_feats, support_feats, support_onehot, clip_weights)
    y = as_i64(val_labels, "val_labels")
    if y.shape[0] != f.shape[0]:
        raise ValueError(f"{f.shape[0]} val feats but {y.shape[0]} labels")
    alphas = 0.1 + np.arange(search_step[0]) * (search_scale[0] - 0.1) / search_step[0]
    betas = 1.0 + np.arange(search_step[1]) * (search_scale[1] - 1.0) / search_step[1]
    gammas = 0.1 + np.arange(search_step[2]) * (search_scale[2] - 0.1) / search_step[2]
    if with_zero:
        alphas, gammas = np.concatenate([[0.0], alphas]), np.concatenate([[0.0], gammas])
    zs = (100.0 * f @ w).astype(np.float32)
    aff = f @ s.T
    kl_term = tipx_kl_term(f, s, l, w, temperature, aff)
    coefs = np.stack(np.meshgrid(alphas, -gammas, indexing="ij"), axis=-1).reshape(-1, 2)  # (n_a*n_g, 2)
    accs = np.concatenate([grid_accuracy(zs, np.stack([cache_logits(aff, l, float(beta)), kl_term]), coefs, y)
                           for beta in betas])  # (n_b * n_a*n_g,), beta-major
    strength = coefs[:, 0] / search_scale[0] - coefs[:, 1] / search_scale[2]  # (n_a*n_g,), beta-independent
    b, g = divmod(grid_pick(accs, y.shape[0], np.tile(strength, len(betas)), rule), coefs.shape[0])
    best = dict(alpha=float(coefs[g, 0]), beta=float(betas[b]), gamma=float(-coefs[g, 1]),
                acc=float(accs[b * coefs.shape[0] + g]))
    log.debug("tipx_search: %s", best)
    return best

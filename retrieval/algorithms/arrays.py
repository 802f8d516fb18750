"""Array boundary helpers shared by every pure function in :mod:`retrieval.algorithms`.

Each public algorithm accepts numpy arrays (or torch tensors) and converts them here, once, to contiguous float32 /
int64 numpy arrays (torch is never imported here). Numerically delicate accumulations (KL terms, matrix inverses)
are done in float64 and cast back to float32 on the way out.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-12


def to_numpy(x, dtype=np.float32) -> np.ndarray:
    """Torch tensor or array-like -> contiguous numpy array of ``dtype`` (``None`` keeps the dtype)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
        x = x.detach().cpu()
        if dtype is not None and str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    return np.ascontiguousarray(x, dtype=dtype)


def _check_ndim(out: np.ndarray, name: str, ndim: int | None) -> np.ndarray:
    if ndim is not None and out.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {out.shape}")
    return out


def as_f32(x, name: str = "array", ndim: int | None = None) -> np.ndarray:
    """``x`` as a C-contiguous float32 array, checked to have ``ndim`` dimensions when given."""
    return _check_ndim(to_numpy(x, np.float32), name, ndim)


def as_i64(x, name: str = "array", ndim: int | None = 1) -> np.ndarray:
    """``x`` as a C-contiguous int64 array, checked to have ``ndim`` dimensions when given."""
    return _check_ndim(to_numpy(x, np.int64), name, ndim)


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = EPS) -> np.ndarray:
    """``norm(x)``: divide by the L2 norm along ``axis`` (zero rows stay zero)."""
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, eps)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (computed in float64)."""
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable log-softmax along ``axis`` (float64)."""
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(n,) int labels -> (n, C) float32 one-hot matrix ``L``."""
    labels = as_i64(labels, "labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    out = np.zeros((labels.shape[0], num_classes), dtype=np.float32)
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in [0, 1] of ``argmax(logits, 1)`` against ``labels``."""
    labels = as_i64(labels, "labels")
    if labels.size == 0:
        return 0.0
    return float(np.mean(np.argmax(np.asarray(logits), axis=1) == labels))


def grid_accuracy(base: np.ndarray, terms: np.ndarray, coefs: np.ndarray, labels: np.ndarray,
                  max_elems: int = 1 << 24) -> np.ndarray:
    """Accuracy of ``logits_g = base + Σ_t coefs[g, t] · terms[t]`` for every grid point g, vectorised.

    base (N, C), terms (T, N, C), coefs (G, T), labels (N,) -> (G,) float64 accuracies. Work is chunked over grid
    points and rows so at most ~``max_elems`` logits are materialised at once.
    """
    base = np.asarray(base, dtype=np.float32)
    terms = np.asarray(terms, dtype=np.float32)
    coefs = np.asarray(coefs, dtype=np.float32)
    n, c = base.shape
    g_total = coefs.shape[0]
    correct = np.zeros(g_total, dtype=np.int64)
    rows = max(1, min(n, max_elems // max(c, 1)))
    for r0 in range(0, n, rows):
        b = base[r0 : r0 + rows]
        t = terms[:, r0 : r0 + rows]
        y = labels[r0 : r0 + rows]
        gs = max(1, max_elems // max(b.size, 1))
        for g0 in range(0, g_total, gs):
            logits = b[None] + np.einsum("gt,tnc->gnc", coefs[g0 : g0 + gs], t, optimize=True)
            correct[g0 : g0 + gs] += (logits.argmax(axis=2) == y[None]).sum(axis=1)
    return correct / max(n, 1)


def one_se_pick(accs, n: int, complexity) -> int:
    """The one-standard-error rule over a grid: the simplest grid point whose accuracy is within one standard error
    of the best, ``acc_g >= best - sqrt(best (1 - best) / n)`` (binomial SE of the best accuracy on ``n`` labelled
    items). accs (G,) in [0, 1], complexity (G,) (lower = simpler: closer to zero-shot) -> grid position; among
    equally simple points the more accurate, then the first. With a small tuning split the best grid point is often
    best by chance; the rule keeps the augmentation only as strong as the split can justify."""
    a = np.asarray(accs, dtype=np.float64).ravel()
    c = np.asarray(complexity, dtype=np.float64).ravel()
    if a.shape != c.shape or not a.size:
        raise ValueError(f"accs {a.shape} and complexity {c.shape} must be the same non-empty shape")
    best = float(a.max())
    se = float(np.sqrt(best * (1.0 - best) / max(int(n), 1)))
    ok = np.nonzero(a >= best - se - 1e-12)[0]
    return int(ok[np.lexsort((ok, -a[ok], c[ok]))[0]])


def grid_pick(accs, n: int, complexity, rule: str = "best") -> int:
    """A grid position chosen by ``rule``: ``"best"`` the first of the most accurate (the papers' validation search;
    grids ascend, so ties keep the weaker setting), ``"1se"`` :func:`one_se_pick`. accs (G,), complexity (G,)."""
    if rule == "best":
        return int(np.argmax(accs))
    if rule == "1se":
        return one_se_pick(accs, n, complexity)
    raise ValueError(f"rule must be 'best' or '1se', not {rule!r}")

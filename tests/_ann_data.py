"""Seeded clustered unit vectors for the ANN tests (images around cluster centres, text-like queries offset)."""
from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, d: int = 16, clusters: int = 40, noise: float = 0.35, seed: int = 0) -> np.ndarray:
    """(n, d) unit vectors: centres in a shared cone plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, d)))
    lab = rng.integers(0, clusters, n)
    return unit(centres[lab] + noise * rng.standard_normal((n, d)))


def brute(xq: np.ndarray, xb: np.ndarray, k: int, ids: np.ndarray | None = None):
    """Exact top-k oracle (q, k) D, I over xb rows (ids default 0..n-1)."""
    S = xq @ xb.T
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    ids = np.arange(len(xb)) if ids is None else np.asarray(ids)
    return np.take_along_axis(S, order, 1), ids[order]

"""Array boundary helpers shared by the pure-function modules (video, long text)."""
from __future__ import annotations

import numpy as np

EPS = 1e-12


def to_numpy(x, dtype=np.float32) -> np.ndarray:
    """Torch tensor or array-like -> contiguous numpy array of ``dtype`` (torch is never imported here)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
        x = x.detach().cpu()
        if dtype is not None and str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    return np.ascontiguousarray(x, dtype=dtype)


def l2n(x: np.ndarray) -> np.ndarray:
    """norm(x) along the last axis; zero vectors stay zero."""
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, EPS)

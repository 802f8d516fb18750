"""Query vectors kept in an index's cache for the next ``optimize`` to tune on (``<index>/cache/queries.npy``).

ANN tuning is only as good as its queries: text-to-image queries sit across the modality gap, where an index tuned
on image vectors falls short. So the index keeps what it learns of its real queries: the vectors given with
``--queries FILE.npy`` (``index embeddings``, ``optimize``) and a sample of the query vectors a server answers.
``optimize`` (and the automatic build after an import) tunes on them when the caller gives none.

``<index>/cache/queries.json`` says where they came from: ``{"kind": "given" | "served", "count": n}``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from retrieval.errors import InvalidInput

LIMIT = 2000  # vectors kept (the newest)


def _paths(index_path) -> tuple[Path, Path]:
    folder = Path(index_path) / "cache"
    return folder / "queries.npy", folder / "queries.json"


def load_queries(index_path) -> tuple[np.ndarray | None, str | None]:
    """The cached query vectors (q, d) float32 and their kind, or (None, None)."""
    vectors, meta = _paths(index_path)
    if not vectors.exists():
        return None, None
    try:
        xq = np.load(vectors)
        kind = json.loads(meta.read_text()).get("kind", "given") if meta.exists() else "given"
    except (OSError, ValueError):
        return None, None  # a damaged cache is only a lost hint: tuning samples the table instead
    return np.ascontiguousarray(xq, dtype=np.float32), kind


def read_vectors_file(path, option: str, dim: int | None = None) -> np.ndarray:
    """Query vectors from a ``.npy`` file named by CLI ``option`` (``--vectors``, ``--queries``): (q, d) float32,
    a single (d,) row becoming (1, d); ``InvalidInput`` for an unreadable file, a non-float or non-2-D array, or
    (with ``dim``) another width."""
    try:
        xq = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{option} {path}: not a readable .npy array ({exc})") from None
    if xq.ndim == 1:
        xq = xq[None, :]
    if xq.ndim != 2 or not np.issubdtype(xq.dtype, np.floating):
        raise InvalidInput(f"{option} {path}: expected a float (q, d) array, got {xq.dtype} {xq.shape}")
    if dim is not None and xq.shape[1] != dim:
        raise InvalidInput(f"{option} {path}: shape {xq.shape}, expected (n, {dim})")
    if len(xq) == 0:
        raise InvalidInput(f"{option} {path}: holds no vectors (shape {xq.shape})")
    return np.asarray(xq, np.float32)


def read_query_file(path, dim: int) -> np.ndarray:
    """``--queries FILE.npy`` (q, dim) to tune on, checked whole (finite, non-zero rows) before anything is stored."""
    xq = read_vectors_file(path, "--queries", dim)
    if not np.isfinite(xq).all() or (np.linalg.norm(xq, axis=1) == 0).any():
        raise InvalidInput(f"--queries {path}: contains NaN, infinite or all-zero rows")
    return xq


def remember_queries(index_path, xq: np.ndarray, kind: str = "served", limit: int = LIMIT) -> int:
    """Append query vectors (q, d) to the cache, keeping the newest ``limit``; a ``given`` set replaces served
    ones (an explicit choice outranks a sample). Returns the number kept. Written atomically."""
    vectors, meta = _paths(index_path)
    xq = np.asarray(xq, dtype=np.float32).reshape(len(xq), -1)
    old, old_kind = load_queries(index_path)
    if old is not None and old.shape[1] == xq.shape[1] and not (kind == "given" and old_kind == "served"):
        xq = np.concatenate([old, xq])
        kind = "given" if "given" in (kind, old_kind) else kind
    xq = xq[-limit:]
    vectors.parent.mkdir(parents=True, exist_ok=True)
    tmp = vectors.with_name("queries.tmp.npy")
    np.save(tmp, xq)
    os.replace(tmp, vectors)
    meta.write_text(json.dumps({"kind": kind, "count": int(len(xq))}))
    return int(len(xq))

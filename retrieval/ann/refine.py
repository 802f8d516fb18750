"""Refinement of approximate candidates by vectors read from disk, and exact search over a subset of rows: pure
functions of arrays. The vectors come through ``fetch(positions (m,) int64 sorted) -> (m, d)``, any dtype (a
memory-mapped float16 file in ``retrieval/store/lance_disk.py``), so only the rows asked for are read.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from retrieval.ann.exact import topk

Fetch = Callable[[np.ndarray], np.ndarray]
REFINE_CHUNK = 32768  # candidates scored at a time by :func:`refine` (64 MB of float32 at d=512): tuning asks for
#                      1,000 queries x 2,560 candidates, 10 GB at once when all were fetched together
EXACT_CHUNK = 32768  # rows read and scored at a time by :func:`exact_subset` (32 MB of float16 at d=512)


def refine(xq: np.ndarray, cand: np.ndarray, positions: np.ndarray, fetch: Fetch, k: int,
           chunk: int = REFINE_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank candidates by exact inner products with their stored vectors.

    xq (q, d) float32 queries; cand (q, c) int64 candidate labels, -1 for none; positions (q, c) int64 where each
    candidate's vector lies in ``fetch``'s storage (ignored where cand is -1). Returns (D (q, k) float32 scores,
    I (q, k) labels), best first, -inf / -1 where a query has fewer than k candidates. Queries are scored about
    ``chunk`` candidates at a time, so memory is bounded whatever q and c are; each distinct position of a chunk
    is fetched once, in increasing order (the storage is read front to back)."""
    q = len(xq)
    valid = cand >= 0
    D = np.full(cand.shape, -np.inf, np.float32)
    per = max(1, chunk // max(1, cand.shape[1]))  # queries a chunk
    for s in range(0, q, per):
        ok = valid[s:s + per]
        if not ok.any():
            continue
        uniq, inverse = np.unique(positions[s:s + per][ok], return_inverse=True)
        vecs = np.asarray(fetch(uniq), dtype=np.float32)  # (u, d)
        at = np.zeros(ok.shape, np.int64)
        at[ok] = inverse
        scores = np.matmul(vecs[at], xq[s:s + per, :, None])[..., 0]  # (per, c): each query against its own rows
        D[s:s + per] = np.where(ok, scores, -np.inf)
    I = np.where(valid, cand, -1)
    return topk(D, I, k)


def exact_subset(xq: np.ndarray, labels: np.ndarray, positions: np.ndarray, fetch: Fetch, k: int,
                 chunk: int = EXACT_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of queries xq (q, d) over the rows ``labels`` (m,) int64 whose vectors lie at ``positions``
    (m,) in ``fetch``'s storage, read ``chunk`` rows at a time in storage order: (D (q, k), I (q, k) labels)."""
    q = len(xq)
    D = np.full((q, k), -np.inf, np.float32)
    I = np.full((q, k), -1, np.int64)
    order = np.argsort(positions, kind="stable")
    for s in range(0, len(order), chunk):
        part = order[s:s + chunk]
        scores = xq @ np.asarray(fetch(positions[part]), dtype=np.float32).T  # (q, c)
        lab = np.broadcast_to(labels[part], scores.shape)
        D, I = topk(np.concatenate([D, scores], 1), np.concatenate([I, lab], 1), k)
    return D, I


def widen(nprobe: int, nlist: int, matching: int, total: int, cap: float = 16.0) -> int:
    """Lists to probe when only ``matching`` of ``total`` rows may be returned: the filtered top-k sit about
    sqrt(total / matching) times farther out in the list order (at most ``cap`` times), never above nlist."""
    factor = min(cap, max(1.0, (total / max(matching, 1)) ** 0.5))
    return int(min(nlist, max(1, round(nprobe * factor))))

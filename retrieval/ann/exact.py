"""Exact search, the oracle every approximate path is measured against (inner product on unit vectors, faiss's
``xq, xb, k -> D, I`` convention).

- :func:`topk` keeps the k best of each row of candidate lists, ties broken by the lower id (deterministic).
- :func:`exact_search` streams a database in blocks and keeps the running top-k (faiss ``contrib.exhaustive_search``
  style); each block's candidates come from faiss's exhaustive search (:func:`block_topk`), ties settled exactly.
- :func:`recall_at_k` is the fraction of the true top-k found (k-recall@k).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from retrieval.cancel import checkpoint


def topk(D: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each row of candidate lists: scores D (q, m), ids I (q, m) -> D (q, k) float32, I (q, k) int64.

    Rows are sorted by decreasing score, equal scores by increasing id; padded with -inf / -1 when m < k. Every
    candidate tied with the k-th best takes part in the tie-break, so the result does not depend on the order the
    candidates came in.
    """
    D = np.asarray(D, np.float32)
    I = np.asarray(I, np.int64)
    q, m = D.shape
    if m < k:
        D = np.concatenate([D, np.full((q, k - m), -np.inf, np.float32)], 1)
        I = np.concatenate([I, np.full((q, k - m), -1, np.int64)], 1)
    elif m > k > 0:
        kth = -np.partition(-D, k - 1, axis=1)[:, k - 1:k]   # (q, 1) the k-th best score
        wide = int((D >= kth).sum(1).max())                 # candidates at least as good, ties included
        if wide < m:
            part = np.argpartition(-D, wide - 1, axis=1)[:, :wide]
            D, I = np.take_along_axis(D, part, 1), np.take_along_axis(I, part, 1)
    order = np.lexsort((I, -D), axis=1)[:, :max(k, 0)]
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)


def exact_search(xq: np.ndarray, xb_blocks: Iterable, k: int, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product over a streamed database.

    xq (q, d) float32; xb_blocks yields (n_i, d) arrays (ids are running row numbers) or (ids (n_i,), x (n_i, d))
    pairs; ``block`` bounds the rows scored at once (memory q x block). Returns D (q, k) float32 decreasing, I (q, k)
    int64, padded with -inf / -1 when the database holds fewer than k rows; ties as :func:`topk`. Stops with
    ``Cancelled`` between blocks once the work's cancellation token is cancelled (``retrieval.cancel``).
    """
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    q = xq.shape[0]
    D = np.full((q, k), -np.inf, np.float32)
    I = np.full((q, k), -1, np.int64)
    offset = 0
    for item in xb_blocks:
        if isinstance(item, tuple):
            ids, x = np.asarray(item[0], np.int64), item[1]
        else:
            x = item
            ids = np.arange(offset, offset + len(x), dtype=np.int64)
        offset += len(x)
        for s in range(0, len(x), block):
            checkpoint()
            S, J = block_topk(xq, np.ascontiguousarray(x[s:s + block], dtype=np.float32), ids[s:s + block], k)
            D, I = topk(np.concatenate([D, S], 1), np.concatenate([I, J], 1), k)
    return D, I


FAISS_FROM = 1 << 22  # scores per block (q x b) from which faiss proposes the candidates


def block_topk(xq: np.ndarray, xb: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of one block for each query, as :func:`topk` of the full score matrix would give them.

    xq (q, d), xb (b, d) float32, ids (b,) int64 -> D (q, k), I (q, k). From ``FAISS_FROM`` scores on, faiss's
    exhaustive search (BLAS and a heap: several times faster than partitioning a (q, b) matrix in numpy) proposes
    each query's 2k best; a query whose 2k-th score still ties its k-th (a tie group that may reach past the window)
    is scored in full with numpy, so ties are always broken by the lower id."""
    q, b = len(xq), len(xb)
    wide = 2 * k
    if b <= wide or k <= 0 or q * b < FAISS_FROM:  # small: numpy is as fast, and a one-shot query skips faiss' import
        return topk(xq @ xb.T, np.broadcast_to(ids, (q, b)), k)
    import faiss  # heavy dependency, loaded on first use (a one-shot small query never needs it)

    Dw, Jw = faiss.knn(xq, xb, wide, metric=faiss.METRIC_INNER_PRODUCT)
    D, I = topk(Dw, ids[Jw], k)
    spill = np.nonzero(Dw[:, wide - 1] >= Dw[:, k - 1])[0]
    if len(spill):
        D[spill], I[spill] = topk(xq[spill] @ xb.T, np.broadcast_to(ids, (len(spill), b)), k)
    return D, I


def query_hits(I: np.ndarray, I_gt: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query: how many of its true top-k were found, and how many true neighbours it has (at most k).
    I, I_gt (q, >=k) int64 with -1 padding -> (hits (q,), totals (q,)) int64."""
    I, I_gt = np.asarray(I)[:, :k], np.asarray(I_gt)[:, :k]
    hits, totals = np.zeros(len(I), np.int64), np.zeros(len(I), np.int64)
    for j, (a, b) in enumerate(zip(I, I_gt)):
        b = b[b >= 0]
        totals[j] = len(b)
        hits[j] = len(np.intersect1d(a[a >= 0], b))
    return hits, totals


def pooled_recall(hits: np.ndarray, totals: np.ndarray) -> float:
    """All hits over all true neighbours (1.0 when there are none): k-recall@k of ``query_hits``' counts."""
    return float(hits.sum() / totals.sum()) if totals.sum() else 1.0


def recall_at_k(I: np.ndarray, I_gt: np.ndarray, k: int) -> float:
    """k-recall@k: |I[:, :k] ∩ I_gt[:, :k]| over the true neighbours (at most k per query), pooled over queries.
    I, I_gt (q, >=k) int64 with -1 padding. Ties in scores are the caller's business (compare scores when they
    matter)."""
    return pooled_recall(*query_hits(I, I_gt, k))


def recall_lower_bound(hits: np.ndarray, totals: np.ndarray, z: float = 1.645) -> float:
    """A one-sided lower confidence bound of recall over queries like these, from ``query_hits``' counts: the mean
    of the per-query recalls minus ``z`` standard errors (z 1.645: 95%). A tuned setting that must hold on *other*
    queries of the same kind is judged by this bound, not by the sample's mean."""
    per = hits[totals > 0] / totals[totals > 0]
    if not len(per):
        return 1.0
    return float(per.mean() - z * per.std(ddof=1) / np.sqrt(len(per))) if len(per) > 1 else float(per.mean())

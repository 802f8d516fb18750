"""The FAISS backend's search paths, all returning (D (q, k) float32, I (q, k) int64) padded with -inf / -1:

- a flat index is exact already (filtered: FAISS's id selector);
- an ANN index is searched with its tuned parameters, tombstones over-fetched and dropped, and merged with the
  exact search of the rows added since the build (the delta);
- ``exact`` (or a selective filter) is brute force over the Parquet vectors: ``retrieval.ann.exact.exact_search``.
"""
from __future__ import annotations

import numpy as np

from retrieval.ann import structures as faiss_ann
from retrieval.ann.exact import exact_search, topk
from retrieval.store.faiss_table import FaissTable

EXACT_BELOW_MATCHES = 50_000  # a filter matching fewer rows is answered by brute force


def clean(D, I) -> tuple[np.ndarray, np.ndarray]:
    """FAISS results with -inf wherever the id is -1 (FAISS pads with the lowest float)."""
    D = np.asarray(D, np.float32).copy()
    I = np.asarray(I, np.int64)
    D[I < 0] = -np.inf
    return D, I


def search_table(t: FaissTable, xq: np.ndarray, k: int, column: str, exact: bool,
                 allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of xq (q, d) in ``column``; ``allowed``: the ids a filter lets through (None: all)."""
    import faiss  # heavy optional dependency (the FAISS backend)

    index = t.index(column)
    q = len(xq)
    ann = t.uses_ann(column)
    n_delta = t.delta.ntotal if (t.delta is not None and ann) else 0
    if k <= 0 or index.ntotal + n_delta == 0:
        return np.full((q, max(k, 0)), -np.inf, np.float32), np.full((q, max(k, 0)), -1, np.int64)
    if not ann:  # a flat index is exact already
        if allowed is None:
            return clean(*faiss_ann.search(t.searchable(column, index), xq, k, None))
        sel = faiss.IDSelectorBatch(allowed)  # must outlive the search
        return clean(*index.search(xq, k, params=faiss.SearchParameters(sel=sel)))
    if exact or (allowed is not None and len(allowed) <= EXACT_BELOW_MATCHES):
        return brute_force(t, column, xq, k, allowed)
    D, I = ann_search(t, index, xq, k, allowed)
    if allowed is not None:  # over-fetching may still come back short: answer those queries exactly
        short = np.sum(I >= 0, 1) < min(k, len(allowed))
        if short.any():
            D[short], I[short] = brute_force(t, column, xq[short], k, allowed)
    return D, I


def search_params(t: FaissTable) -> faiss_ann.SearchParams:
    params = t.override if t.override is not None else t.ann.get("params", {})
    return faiss_ann.SearchParams(t.ann.get("kind", "flat"), params)


def ann_search(t: FaissTable, index, xq: np.ndarray, k: int, allowed: np.ndarray | None = None):
    """ANN index (tombstones over-fetched and dropped) merged with the exact delta search: (q, k) D, I."""
    import faiss  # heavy optional dependency (the FAISS backend)

    n = index.ntotal
    fetch = k + len(t.tomb)
    if allowed is not None:  # filtered: fetch enough that about k matching rows come back
        fetch = k * int(np.ceil(2 * n / max(len(allowed), 1))) + len(t.tomb)
    fetch = max(1, min(fetch, n))
    if n:
        D, I = clean(*faiss_ann.search(t.searchable("vector", index), xq, fetch, search_params(t)))
        drop = np.isin(I, t.tomb) if len(t.tomb) else np.zeros(I.shape, bool)
        if allowed is not None:
            drop |= ~np.isin(I, allowed)
        D[drop], I[drop] = -np.inf, -1
    else:
        D, I = np.full((len(xq), 0), -np.inf, np.float32), np.full((len(xq), 0), -1, np.int64)
    if t.delta is not None and t.delta.ntotal:
        batch = faiss.IDSelectorBatch(allowed) if allowed is not None else None  # must outlive the search
        sel = faiss.SearchParameters(sel=batch) if batch is not None else None
        kd = min(k, t.delta.ntotal)
        Dd, Id = t.delta.search(xq, kd, params=sel) if sel is not None else t.delta.search(xq, kd)
        Dd, Id = clean(Dd, Id)
        D, I = np.concatenate([D, Dd], 1), np.concatenate([I, Id], 1)
    return topk(D, I, k)


def brute_force(t: FaissTable, column: str, xq: np.ndarray, k: int, allowed: np.ndarray | None):
    """Exact top-k over the Parquet vectors (only ``allowed`` ids when given): the oracle."""
    blocks = t.state.ids_and_vectors(column, t.dim)
    if allowed is not None:
        blocks = ((ids[m], x[m]) for ids, x in blocks if (m := np.isin(ids, allowed)).any())
    return exact_search(xq, blocks, k)

"""SuS-LC: build a labelled support set by text -> image retrieval (Udandarao et al., "SuS-X", ICCV 2023;
vishaal27/SuS-X). The paper searches LAION-5B; clipdex searches any image index built with the same model.

For each class c (in the order given; the label of class c is its position c in that list, so labels travel with
the class names and never depend on folder order — the reference's bug):
  1. rank every index image x by ``score(x) = max_p q_{c,p} · x`` over the class's P_c query embeddings
     (max-fusion of the P_c ranked lists: an image ranks where its best query puts it); ties by lower index;
  2. walk down the ranking and drop an image whose inner product with an image *already kept for this class* is
     ``>= dedup_ip`` (so of a near-duplicate pair the better-ranked one stays);
  3. stop after ``per_class`` kept images.
The same image may be kept by two classes (deduplication is per class, as in the paper).

:func:`sus_lc_select_from_ranked` applies steps 2-3 to ranked candidates a store search already returned; given the
same ranking both functions return the same support set.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from retrieval.algorithms.arrays import as_f32, as_i64

log = logging.getLogger(__name__)

DEFAULT_PER_CLASS = 100
DEFAULT_DEDUP_IP = 0.94


def _dedup_keep(cand_embs: np.ndarray, kept_embs: list[np.ndarray], per_class: int, dedup_ip: float) -> list[int]:
    """Greedy near-duplicate filter over candidates in rank order; returns positions of kept candidates.

    ``kept_embs`` holds the embeddings already kept for this class (mutated in place).
    """
    keep: list[int] = []
    dim = cand_embs.shape[1]
    kept = np.empty((per_class, dim), dtype=np.float32)
    n_kept = 0
    for e in kept_embs:
        kept[n_kept] = e
        n_kept += 1
    for pos in range(cand_embs.shape[0]):
        if n_kept >= per_class:
            break
        e = cand_embs[pos]
        if n_kept and float(np.max(kept[:n_kept] @ e)) >= dedup_ip:
            continue
        kept[n_kept] = e
        n_kept += 1
        keep.append(pos)
        kept_embs.append(e)
    return keep


def sus_lc_select_from_ranked(ranked_ids_per_class: Sequence, ranked_embs_per_class: Sequence,
                              per_class: int = DEFAULT_PER_CLASS,
                              dedup_ip: float = DEFAULT_DEDUP_IP) -> tuple[np.ndarray, np.ndarray]:
    """SuS-LC dedup + truncation over already-retrieved candidates.

    ranked_ids_per_class: list over classes of (R_c,) int64 index ids, best first (a store's text->image search);
    ranked_embs_per_class: list of the matching (R_c, D) embeddings. Returns ``support_idx`` (M,) int64 (ids) and
    ``support_label`` (M,) int64 (class positions), classes in the given order, each in rank order. A class whose
    candidates run out before ``per_class`` survive the dedup gets fewer (logged as a warning): retrieve more.
    """
    if len(ranked_ids_per_class) != len(ranked_embs_per_class):
        raise ValueError("ranked_ids_per_class and ranked_embs_per_class differ in length")
    idx_out, lab_out = [], []
    for c, (ids, embs) in enumerate(zip(ranked_ids_per_class, ranked_embs_per_class)):
        ids = as_i64(ids, f"ranked ids of class {c}")
        embs = as_f32(embs, f"ranked embs of class {c}", ndim=2)
        if embs.shape[0] != ids.shape[0]:
            raise ValueError(f"class {c}: {ids.shape[0]} ids but {embs.shape[0]} embeddings")
        keep = _dedup_keep(embs, [], per_class, dedup_ip)
        if len(keep) < per_class:
            log.warning("SuS-LC: class %d kept %d of %d (only %d candidates)", c, len(keep), per_class, ids.shape[0])
        idx_out.append(ids[keep])
        lab_out.append(np.full(len(keep), c, dtype=np.int64))
    if not idx_out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(idx_out).astype(np.int64), np.concatenate(lab_out)


def rank_index(query_embs, index_embs, top: int | None = None) -> np.ndarray:
    """Index ids ranked by ``max_p q_p · x`` (best first, ties by lower id); query_embs (P, D), index_embs (I, D).

    With ``top`` only the best ``top`` ids are returned (argpartition, then an exact sort of those).
    """
    q = as_f32(query_embs, "query_embs")
    if q.ndim == 1:
        q = q[None]
    x = as_f32(index_embs, "index_embs", ndim=2)
    scores = (x @ q.T).max(axis=1)  # (I,)
    n = scores.shape[0]
    ids = np.arange(n)
    if top is not None and top < n:
        # include every id tied with the top-th score so the tie-break by id stays exact
        kth = np.partition(-scores, top - 1)[top - 1]
        ids = np.nonzero(-scores <= kth)[0]
    order = np.lexsort((ids, -scores[ids]))
    out = ids[order]
    return out[:top] if top is not None else out


def sus_lc_select(class_query_embs: Sequence, index_embs, per_class: int = DEFAULT_PER_CLASS,
                  dedup_ip: float = DEFAULT_DEDUP_IP) -> tuple[np.ndarray, np.ndarray]:
    """SuS-LC support selection over a dense index matrix.

    class_query_embs: list over classes of (P_c, D) text query embeddings (e.g. "A photo of a {}." or the
    class's descriptions; a (D,) vector is one query); index_embs (I, D) unit image embeddings.
    Returns ``(support_idx (M,) int64 rows of index_embs, support_label (M,) int64 class positions)``.
    Candidates are examined in growing blocks (4 x per_class, doubled while dedup leaves too few) so a large
    index is never fully sorted.
    """
    x = as_f32(index_embs, "index_embs", ndim=2)
    n = x.shape[0]
    if n == 0 or per_class <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ranked_ids, ranked_embs = [], []
    for q in class_query_embs:
        top = min(n, 4 * per_class)
        while True:
            ids = rank_index(q, x, top)
            kept = _dedup_keep(x[ids], [], per_class, dedup_ip)
            if len(kept) >= per_class or top >= n:
                break
            top = min(n, 2 * top)
        ranked_ids.append(ids)
        ranked_embs.append(x[ids])
    return sus_lc_select_from_ranked(ranked_ids, ranked_embs, per_class, dedup_ip)

"""Fusing rankings and combining query vectors: pure functions, arrays in, arrays out.

- Reciprocal-rank fusion (Cormack, Clarke and Buettcher, "Reciprocal Rank Fusion outperforms Condorcet and
  individual Rank Learning Methods", SIGIR 2009): ``s(d) = sum_i w_i / (k + r_i(d))`` over the rankings ``i`` that
  hold ``d`` (``r_i`` 1-based), ``k = 60`` as in the paper. Only ranks count, so a cosine and a BM25 score never
  need a common scale.
- Complete-match RRF (the default of hybrid search): RRF, plus a bonus ``B = sum_i w_i / (k + 1)`` (the largest
  RRF score a row can have) for each keyword hit that carries every word of the query, applied only when the
  keyword ranking tells hits apart that way (some of its hits carry every word, some do not). Those rows then
  rank first, in RRF order, then the rest in RRF order. Ranks alone cannot see that the receipt reading
  ``TOTAL 42.17`` answers "total 42.17" and the look-alike reading ``TOTAL 17.42`` does not (both hold most of
  the terms, one rank apart); a picture search that cannot read reorders them. Full-text engines draw the same
  line with an all-terms match (Elasticsearch's ``operator: and`` / ``minimum_should_match``, Azure AI Search's
  ``searchMode=all``); when every hit or no hit is complete (a one-word query, a query about what the picture
  shows) it changes nothing and the fusion is Cormack's RRF (LanceDB's hybrid default, its ``RRFReranker``).
- Weighted score fusion (as Weaviate's ``relativeScoreFusion``): each ranking's scores min-max scaled to [0, 1]
  over its own list, then
  ``s(d) = sum_i w_i * scaled_i(d)`` (a document missing from a list gets 0 there).
- Query arithmetic (rclip's ``"beach" + "sunset:0.5" - "people"``): ``q = norm(sum_j a_j e_j - sum_j b_j n_j)``
  over unit vectors ``e`` (added) and ``n`` (subtracted) with weights ``a``, ``b``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

RRF_K = 60

__all__ = ["RRF_K", "combine_vectors", "complete_match_fusion", "rank_positions", "reciprocal_rank_fusion",
           "weighted_score_fusion"]


def _weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    w = np.ones(n, np.float64) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (n,):
        raise ValueError(f"{n} rankings need {n} weights, got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("fusion weights must be finite and non-negative")
    return w


def _ordered(ids: dict, scores: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort by decreasing score, ties by first appearance (the earlier ranking, the better rank)."""
    keys = np.fromiter(ids.keys(), np.int64, len(ids))
    order = np.lexsort((first, -scores))
    return keys[order], scores[order].astype(np.float32)


def reciprocal_rank_fusion(rankings: Sequence[np.ndarray], weights: Sequence[float] | None = None,
                           k: int = RRF_K) -> tuple[np.ndarray, np.ndarray]:
    """RRF of ``rankings`` (each an (n_i,) int64 id array, best first; ids unique within a ranking) ->
    (ids (m,) int64, scores (m,) float32), the union of all ids, best first. ``k`` >= 0."""
    if k < 0:
        raise ValueError(f"RRF k must be >= 0, got {k}")
    w = _weights(weights, len(rankings))
    pos: dict[int, int] = {}
    score: list[float] = []
    first: list[int] = []
    for i, ranking in enumerate(rankings):
        for r, d in enumerate(np.asarray(ranking, np.int64).tolist()):
            j = pos.setdefault(d, len(score))
            if j == len(score):
                score.append(0.0)
                first.append(i * 1_000_000_000 + r)
            score[j] += w[i] / (k + r + 1)
    return _ordered(pos, np.asarray(score, np.float64), np.asarray(first, np.int64))


def complete_match_fusion(vector_ids: np.ndarray, keyword_ids: np.ndarray, complete: np.ndarray,
                          weights: Sequence[float] | None = None, k: int = RRF_K) -> tuple[np.ndarray, np.ndarray]:
    """Complete-match RRF (see the module's docstring) of a vector ranking ``vector_ids`` (n_v,) and a keyword
    ranking ``keyword_ids`` (n_k,) int64, best first, with ``complete`` (n_k,) bool: whether each keyword hit
    carries every query word -> (ids (m,) int64, scores (m,) float32), best first. ``weights``: (vector, keyword).
    The bonus needs a keyword weight > 0 and a mixed ``complete``; else this is :func:`reciprocal_rank_fusion`."""
    kw = np.asarray(keyword_ids, np.int64)
    full = np.asarray(complete, bool)
    if full.shape != kw.shape:
        raise ValueError(f"{kw.shape} keyword hits but {full.shape} complete flags")
    w = _weights(weights, 2)
    ids, scores = reciprocal_rank_fusion([vector_ids, kw], w, k)
    if w[1] == 0 or full.all() or not full.any():
        return ids, scores
    bonus = float(w.sum()) / (k + 1)
    lifted = np.isin(ids, kw[full])
    fused = scores.astype(np.float64) + bonus * lifted
    order = np.argsort(-fused, kind="stable")  # RRF's order within each tier (ties keep its tie-break)
    return ids[order], fused[order].astype(np.float32)


def weighted_score_fusion(rankings: Sequence[tuple[np.ndarray, np.ndarray]],
                          weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum of min-max scaled scores: ``rankings`` = [(ids (n_i,), scores (n_i,)), ...] -> (ids (m,),
    scores (m,) float32) best first. A list whose scores are all equal scales to 1 for each of its ids."""
    w = _weights(weights, len(rankings))
    pos: dict[int, int] = {}
    score: list[float] = []
    first: list[int] = []
    for i, (ids, s) in enumerate(rankings):
        s = np.asarray(s, np.float64)
        ids = np.asarray(ids, np.int64)
        if s.shape != ids.shape:
            raise ValueError(f"ranking {i}: {ids.shape} ids but {s.shape} scores")
        if not len(s):
            continue
        lo, hi = float(s.min()), float(s.max())
        scaled = np.ones_like(s) if hi == lo else (s - lo) / (hi - lo)
        for r, (d, x) in enumerate(zip(ids.tolist(), scaled.tolist())):
            j = pos.setdefault(d, len(score))
            if j == len(score):
                score.append(0.0)
                first.append(i * 1_000_000_000 + r)
            score[j] += w[i] * x
    return _ordered(pos, np.asarray(score, np.float64), np.asarray(first, np.int64))


def rank_positions(ranking: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """1-based rank of each of ``ids`` (m,) in ``ranking`` (n,), 0 where absent -> (m,) int64."""
    where = {d: r + 1 for r, d in enumerate(np.asarray(ranking, np.int64).tolist())}
    return np.asarray([where.get(d, 0) for d in np.asarray(ids, np.int64).tolist()], np.int64)


def combine_vectors(added: np.ndarray, added_w: Sequence[float], subtracted: np.ndarray | None = None,
                    subtracted_w: Sequence[float] | None = None) -> np.ndarray:
    """Query arithmetic: added (p, d) and subtracted (n, d) vectors (each normalised here) with weights (p,), (n,)
    -> (d,) float32 unit vector ``norm(sum a_j e_j - sum b_j n_j)``. ``ValueError`` when nothing is added or
    the terms cancel out."""
    e = np.asarray(added, np.float64)
    if e.ndim != 2 or len(e) == 0:
        raise ValueError("query arithmetic needs at least one added term")
    a = np.asarray(added_w, np.float64)
    parts = [(e, a)]
    if subtracted is not None and len(subtracted):
        parts.append((np.asarray(subtracted, np.float64), -np.asarray(subtracted_w, np.float64)))
    q = np.zeros(e.shape[1], np.float64)
    for x, w in parts:
        if x.ndim != 2 or x.shape[1] != e.shape[1] or w.shape != (len(x),):
            raise ValueError(f"terms {x.shape} and weights {w.shape} do not match")
        if not np.isfinite(x).all() or not np.isfinite(w).all():
            raise ValueError("query terms and weights must be finite")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        q += (w[:, None] * x / np.where(norms > 0, norms, 1.0)).sum(0)
    n = float(np.linalg.norm(q))
    if n < 1e-9:
        raise ValueError("the query terms cancel out (the combined vector is zero)")
    return (q / n).astype(np.float32)

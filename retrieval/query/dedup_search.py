"""Step 1 of a dedup run (``retrieval.query.dedup``): the self-join of a table's new rows against the whole table,
streamed in blocks of rows, each searched as one batch with the table's search structure, saved as it goes (a run
killed part-way resumes; a re-run searches only the rows added since).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from retrieval.algorithms.dedup import candidate_pairs
from retrieval.cancel import checkpoint
from retrieval.index.directory import Index
from retrieval.io.workers import Progress
from retrieval.query.dedup_state import DedupState, save_state
from retrieval.store.base import arrow_to_vectors

SAVE_SECONDS = 20.0
HOLD_PAIRS = 1 << 20   # candidate pairs held between merges
FEW_NEW = 0.1          # at most this share of the table new: read the new rows by id
PAIR_BLOCK = 16384     # pairs whose cosines are computed at a time (their vectors read by id)


def search_new_rows(ix: Index, state: DedupState, table: str, k: int, min_score: float, block_rows: int,
                    live: np.ndarray, report: Callable[[Progress], None]) -> int:
    """Candidate pairs (``k`` nearest rows, cosine >= ``min_score``) of the rows of ``table`` not searched yet
    (``live`` (n,) int64: the table's ids), added to ``state``; returns how many rows were searched now.

    Streamed: a block of ``block_rows`` vectors at a time, in the store's clustered order (rows of one inverted list
    together: their searches probe and re-rank the same rows, read once), searched as one batch; its pairs are held
    and merged into the state when it is saved (every ``SAVE_SECONDS``, or when ``HOLD_PAIRS`` are held), so nothing
    is done per row in Python and nothing but the state grows with the table. When at most ``FEW_NEW`` of the table
    is new (a re-run after adding rows), only the new rows are read, by id."""
    done = np.unique(state.done)   # sorted: a block's searched rows are found by binary search
    new = live[~_among(live, done)]
    total, seen, searched, last_save = len(new), 0, 0, time.monotonic()
    if len(new) <= FEW_NEW * len(live):
        blocks = _rows_by_id(ix, table, new, block_rows)
    else:
        blocks = ix.store.iter_vectors_clustered(table, batch_rows=block_rows)
    for ids, x in blocks:
        checkpoint()
        todo = ~_among(ids, done)
        seen += int(todo.sum())
        if todo.any():
            D, I = ix.search_vectors(table, x[todo], k=k + 1)
            state.add_block(ids[todo], *candidate_pairs(ids[todo], D, I, min_score))
            searched += int(todo.sum())
            if time.monotonic() - last_save > SAVE_SECONDS or state.held() > HOLD_PAIRS:
                save_state(ix.path, table, state)
                last_save = time.monotonic()
        report(Progress("search", seen, total, {"candidates": len(state.pairs) + state.held()}))
    state.flush()
    return searched


def _rows_by_id(ix: Index, table: str, ids: np.ndarray, block_rows: int):
    """(ids (b,), vectors (b, d) float32) of the rows ``ids``, ``block_rows`` at a time (rows without a vector are
    left out)."""
    for s in range(0, len(ids), block_rows):
        got = ix.store.take(table, ids[s:s + block_rows], ["id", "vector"])
        x, valid = arrow_to_vectors(got.column("vector"), ix.store.dim)
        if len(x):
            yield got.column("id").to_numpy()[valid].astype(np.int64), x


def rows_of(ix: Index, table: str, ids, columns: list[str]) -> dict[int, dict]:
    """The rows ``ids`` of ``table`` by id, with their ``columns`` that the table has (others left out)."""
    have = set(ix.store.schema(table).names)
    cols = [c for c in columns if c in have]
    return {r["id"]: r for r in ix.store.take(table, np.unique(ids), ["id", *cols]).to_pylist()}


def _among(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """ids (b,) -> (b,) bool: which are in ``sorted_ids`` (m,) sorted ascending."""
    if len(sorted_ids) == 0:
        return np.zeros(len(ids), bool)
    at = np.searchsorted(sorted_ids, ids)
    return (at < len(sorted_ids)) & (sorted_ids[np.minimum(at, len(sorted_ids) - 1)] == ids)


def pair_cosines(ix: Index, table: str, pairs: np.ndarray) -> np.ndarray:
    """CLIP cosines (p,) float32 of ``pairs`` (p, 2) of rows of ``table``, their vectors read by id a block at a
    time (a row without a vector scores -1)."""
    out = np.full(len(pairs), -1.0, np.float32)
    for s in range(0, len(pairs), PAIR_BLOCK):
        block = pairs[s:s + PAIR_BLOCK]
        got = ix.store.take(table, np.unique(block), ["id", "vector"])
        x, valid = arrow_to_vectors(got.column("vector"), ix.store.dim)
        ids = got.column("id").to_numpy()[valid].astype(np.int64)
        order = np.argsort(ids)
        ids, x = ids[order], x[order]
        pos = np.searchsorted(ids, block).clip(0, max(len(ids) - 1, 0))
        if len(ids):
            have = (ids[pos] == block).all(1)
            out[s:s + PAIR_BLOCK][have] = np.einsum("pd,pd->p", x[pos[have, 0]], x[pos[have, 1]])
    return out

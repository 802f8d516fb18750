"""Pairs of 64-bit perceptual hash codes within a few bits of each other, without comparing every pair.

Multi-index hashing (Norouzi, Punjani and Fleet, "Fast search in Hamming space with multi-index hashing", CVPR
2012): split each 64-bit code into ``chunks`` substrings of 64 / chunks bits. Two codes at most r bits apart differ
in at most floor(r / chunks) bits of some substring (pigeonhole), so looking up each query substring, and its
variants with up to ``flips`` bits flipped, in a table sorted by that substring finds every pair within
``chunks * (flips + 1) - 1`` bits; pairs a little further apart are found when their differing bits are spread
unevenly. With 4 chunks of 16 bits and 1 flip: every pair within 7 bits, 17 lookups per chunk.

Each candidate found is checked on the whole code (column 0, the pHash) and on a second code taken at the same
place (column 1, the dHash): the largest of the two distances must also be small.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from retrieval.algorithms.dedup import merge_pairs

CHUNKS = 4
FLIPS = 1
MAX_BUCKET = 4096     # a substring value shared by more table codes than this is not expanded (blank pictures)
BLOCK_PAIRS = 1 << 22  # candidate pairs expanded at once (bounded memory)


class HammingPairs(NamedTuple):
    """``pairs`` (p, 2) int64 owner ids (a < b, each pair once, at its fewest bits); ``bits`` (p,) int64: the first
    code's distance there; ``crowded``: lookups skipped because their bucket held more than ``MAX_BUCKET`` codes."""

    pairs: np.ndarray
    bits: np.ndarray
    crowded: int


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 -> int64 array of the same shape."""
    return np.bitwise_count(np.asarray(x, np.uint64)).astype(np.int64)


def _chunk(codes: np.ndarray, c: int, chunks: int) -> np.ndarray:
    width = 64 // chunks
    return ((codes >> np.uint64(c * width)) & np.uint64((1 << width) - 1)).astype(np.int64)


def hamming_join(queries: np.ndarray, query_owner: np.ndarray, table: np.ndarray, table_owner: np.ndarray,
                 max_bits: int, max_both: int | None = None, chunks: int = CHUNKS, flips: int = FLIPS,
                 max_bucket: int = MAX_BUCKET) -> HammingPairs:
    """Owner pairs with a query code within ``max_bits`` of a table code (column 0), and the larger of the column
    0 and column 1 distances within ``max_both`` (no second check when None). queries (n, 2), table (m, 2) uint64;
    query_owner (n,), table_owner (m,) int64 (a code's row: pairs of one owner are left out). Every pair within
    ``chunks * (flips + 1) - 1`` bits is found (see the module docstring); ``flips`` is 0 or 1."""
    if 64 % chunks or flips not in (0, 1):
        raise ValueError("chunks must divide 64 and flips be 0 or 1")
    queries, table = np.asarray(queries, np.uint64).reshape(-1, 2), np.asarray(table, np.uint64).reshape(-1, 2)
    query_owner, table_owner = np.asarray(query_owner, np.int64), np.asarray(table_owner, np.int64)
    width = 64 // chunks
    masks = np.array([0] + ([1 << b for b in range(width)] if flips else []), np.int64)
    found, crowded = [], 0
    step = max(1, BLOCK_PAIRS // (4 * len(masks)))
    for c in range(chunks):   # one substring's sorted table at a time (its codes in that order: read in runs)
        tkey = _chunk(table[:, 0], c, chunks)
        order = np.argsort(tkey, kind="stable")
        skey, scode = tkey[order], table[order, 0]
        del tkey
        for s in range(0, len(queries), step):   # blocks of queries: the probes of one block at a time
            qs = np.arange(s, min(s + step, len(queries)))
            probe_q = np.repeat(qs, len(masks))
            probe_key = (_chunk(queries[qs, 0], c, chunks)[:, None] ^ masks[None, :]).reshape(-1)
            lo, hi = np.searchsorted(skey, probe_key, "left"), np.searchsorted(skey, probe_key, "right")
            size = hi - lo
            crowded += int((size > max_bucket).sum())
            keep = (size > 0) & (size <= max_bucket)
            probe_q, lo, size = probe_q[keep], lo[keep], size[keep]
            ends = np.cumsum(size)
            start = 0
            while start < len(size):   # blocks of probes whose expansion holds at most BLOCK_PAIRS pairs
                base = int(ends[start - 1]) if start else 0
                stop = max(start + 1, int(np.searchsorted(ends, base + BLOCK_PAIRS, "right")))
                pq, sz = probe_q[start:stop], size[start:stop]
                offsets = np.cumsum(sz) - sz   # where each probe's bucket starts in the expansion
                t = np.repeat(lo[start:stop] - offsets, sz) + np.arange(int(sz.sum()))   # sorted-table positions
                # the sorted codes: a bucket is a run, read in order; a query's code repeated, not gathered
                bits = np.bitwise_count(np.repeat(queries[pq, 0], sz) ^ scode[t])
                near = np.flatnonzero(bits <= max_bits)
                q = pq[np.searchsorted(offsets, near, "right") - 1]
                found.append(_checked(queries, query_owner, table, table_owner, q, order[t[near]],
                                      bits[near].astype(np.int64), max_both))
                start = stop
    return _best(found, crowded)


def _checked(queries, query_owner, table, table_owner, q, t, bits, max_both) -> tuple[np.ndarray, np.ndarray]:
    """Of the code pairs (q, t) already within the first code's bits: those of two owners, within ``max_both``."""
    ok = query_owner[q] != table_owner[t]
    if max_both is not None:
        ok &= np.maximum(bits, popcount(queries[q, 1] ^ table[t, 1])) <= max_both
    a, b = query_owner[q[ok]], table_owner[t[ok]]
    return np.stack([np.minimum(a, b), np.maximum(a, b)], 1), bits[ok]


def _best(found: list, crowded: int) -> HammingPairs:
    if not found:
        return HammingPairs(np.zeros((0, 2), np.int64), np.zeros(0, np.int64), crowded)
    pairs, fewest = merge_pairs(np.concatenate([p for p, _ in found]), -np.concatenate([b for _, b in found]))
    return HammingPairs(pairs, (-fewest).astype(np.int64), crowded)

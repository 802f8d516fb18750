"""Indexes filled in parallel and merged (``retrieval.ann.merge``, ``clipdex optimize --engine ray``): copies of one
trained index, each filled with a partition of the rows, merge into the index one process would have built."""
from __future__ import annotations

import functools

import faiss
import numpy as np
import pytest

from clipdex.synthetic.embeddings import clustered
from indexers.ray_optimize import partitions
from retrieval.ann import structures
from retrieval.ann.merge import from_bytes, merge_into, to_bytes, unmergeable

D = 32
MERGEABLE = ["IVF16,Flat", "IVF16,SQ8", "IVF16,PQ8x4fs", "IVF16,PQ8x4fs,Refine(SQfp16)", "IVF16,PQ8x4fs,RFlat"]


X = clustered(3000, D, clusters=30, seed=3)
IDS = np.arange(3000, dtype=np.int64) * 7 + 5  # ids unlike positions


@pytest.fixture(scope="module")
def rows():
    return IDS, X


@functools.cache
def _trained(factory: str) -> np.ndarray:
    return to_bytes(structures.build_index(factory, D, X, []))


def trained(factory: str):
    """A fresh copy of the trained empty index (trained once per structure) and one filled with every row."""
    one = from_bytes(_trained(factory))
    one.add_with_ids(X, IDS)
    return from_bytes(_trained(factory)), one


@pytest.mark.parametrize("factory", MERGEABLE)
def test_copies_filled_apart_and_merged_search_like_one_index(rows, factory):
    ids, x = rows
    empty, one = trained(factory)
    assert unmergeable(empty) is None
    copies = []
    for a in (0, 1000, 2200):  # uneven parts, through bytes as between processes
        part = from_bytes(to_bytes(empty))
        stop = {0: 1000, 1000: 2200, 2200: 3000}[a]
        part.add_with_ids(x[a:stop], ids[a:stop])
        copies.append(from_bytes(to_bytes(part)))
    merged = copies[0]
    for c in copies[1:]:
        merge_into(merged, c)
    merged = from_bytes(to_bytes(merged))
    assert merged.ntotal == 3000 and copies[1].ntotal == 0
    d1, i1 = one.search(x[:200], 10)
    d2, i2 = merged.search(x[:200], 10)
    np.testing.assert_array_equal(i1, i2)  # same labels: the merged ids are the row ids, not positions
    np.testing.assert_allclose(d1, d2, atol=1e-6)
    assert set(np.unique(i2)) <= set(ids.tolist())


@pytest.mark.parametrize("cuts", [(0, 128, 300, 3000), (0, 256, 384, 3000)])
def test_fast_scan_lists_holding_whole_blocks_merge_intact(rows, cuts):
    """One list (IVF1) holding a multiple of 128 entries when the next copy comes: faiss's own append copies whole
    blocks to the wrong place there (a heap corruption: the process aborts); the list is repacked instead."""
    ids, x = rows
    empty, one = trained("IVF1,PQ8x4fs")
    copies = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        part = from_bytes(to_bytes(empty))
        part.add_with_ids(x[a:b], ids[a:b])
        copies.append(part)
    merged = copies[0]
    for c in copies[1:]:
        merge_into(merged, c)
    merged = from_bytes(to_bytes(merged))
    np.testing.assert_array_equal(one.search(x[:100], 10)[1], merged.search(x[:100], 10)[1])
    assert sorted(faiss.vector_to_array(merged.id_map).tolist()) == ids.tolist()


def test_an_hnsw_graph_is_not_merged(rows):
    ids, x = rows
    why = unmergeable(structures.build_index("HNSW16,Flat", D, x, []))
    assert why is not None and "HNSW" in why


def test_a_fill_set_for_the_block_fills_the_full_build_and_none_falls_back(rows):
    ids, x = rows
    seen = []

    def fill(empty):
        seen.append(empty.ntotal)
        empty.add_with_ids(x[:10], ids[:10])
        return empty

    with structures.filled_by(fill):
        assert structures.build_index("IVF16,Flat", D, x, [(ids, x)]).ntotal == 10
    assert seen == [0]
    assert structures.build_index("IVF16,Flat", D, x, [(ids, x)]).ntotal == 3000  # outside the block: here
    with structures.filled_by(lambda empty: None):  # a fill that declines: the blocks are added here
        assert structures.build_index("IVF16,Flat", D, x, [(ids, x)]).ntotal == 3000


@pytest.mark.parametrize("counts,tasks", [([(0, 30000)], 4), ([(3, 100), (7, 9000), (9, 0), (12, 25000)], 4),
                                          ([(0, 10)], 8), ([], 3), ([(1, 50000), (2, 50000)], 3)])
def test_partitions_cover_every_live_row_once_within_fragments(counts, tasks):
    parts = partitions(counts, tasks, min_rows=100)
    by_frag = {}
    for frag, offset, limit in parts:
        assert limit > 0
        by_frag.setdefault(frag, []).append((offset, limit))
    for frag, n in counts:
        ranges = by_frag.get(frag, [])
        covered = [i for o, lim in ranges for i in range(o, o + lim)]
        assert covered == list(range(n)), frag  # in order, no gap, no overlap
    total = sum(n for _, n in counts)
    assert all(lim <= max(-(-total // tasks), 100) for _, _, lim in parts)
    assert [f for f, _, _ in parts] == sorted([f for f, _, _ in parts], key=[f for f, _ in counts].index)

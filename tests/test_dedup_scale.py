"""A large table's dedup run at test size: the self-join streamed in blocks whose candidate pairs are merged into the
state once per save (not once per block: a merge sorts every pair found so far), resumable where it stopped, the
same groups as a brute-force self-join; and re-ranking that holds a bounded number of candidate vectors at a time
(a tuning run asked for 1,000 queries x 2,560 candidates at once: 10 GB)."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.ann.refine import refine
from retrieval.index.directory import create_index
from retrieval.query import dedup_search as dedup_run
from retrieval.query.dedup import DedupOptions, find_duplicates
from retrieval.query.dedup_state import DedupState

N, D, BLOCK = 1200, 32, 64


def test_refine_scores_a_bounded_chunk_of_candidates_at_a_time_with_the_same_results():
    rng = np.random.default_rng(0)
    store = rng.standard_normal((500, D)).astype(np.float16)
    xq = rng.standard_normal((300, D)).astype(np.float32)
    cand = np.argsort(rng.random((300, 500)), 1)[:, :40]                # 40 distinct rows per query
    cand[::7, 30:] = -1                                              # short candidate lists
    fetched = []

    def fetch(p):
        fetched.append(len(p))
        assert np.all(np.diff(p) > 0)                               # each read front to back
        return store[p]

    Dc, Ic = refine(xq, cand, cand, fetch, 10, chunk=120)
    assert len(fetched) > 1 and max(fetched) <= 120
    Dw, Iw = refine(xq, cand, cand, lambda p: store[p], 10, chunk=10**9)
    assert (Ic == Iw).all() and np.allclose(Dc, Dw)
    for j in (0, 7, 299):                                            # and the exact re-ranking, query by query
        c = cand[j][cand[j] >= 0]
        s = xq[j] @ store[c].astype(np.float32).T
        assert set(Ic[j]) == set(c[np.argsort(-s)][:10])


@pytest.fixture()
def planted(tmp_path):
    """N random unit vectors, 40 of them with 1-2 noisy copies (cosine ~0.99, same hash: exact duplicates)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    hashes = [f"h{i}" for i in range(N)]
    picks = rng.permutation(N)
    for c in range(40):
        base, copies = picks[3 * c], picks[3 * c + 1:3 * c + 1 + 1 + c % 2]
        for m in copies:
            y = x[base] + 0.1 * rng.standard_normal(D).astype(np.float32) / np.sqrt(D)
            x[m] = y / np.linalg.norm(y)
            hashes[m] = hashes[base]
    ix = create_index(tmp_path / "ix", dim=D, model="none")
    ids = ix.add_vectors("images", x, {"hash": hashes, "path": [f"{i}.jpg" for i in range(N)]})
    ix.close()
    s = x @ x.T
    a, b = np.nonzero(np.triu(s >= 0.95, 1))
    truth = {frozenset(g) for g in _components(ids[a], ids[b])}
    return tmp_path / "ix", truth


def _components(a, b) -> list[set]:
    groups: list[set] = []
    for u, v in zip(a.tolist(), b.tolist()):
        hit = [g for g in groups if u in g or v in g]
        merged = set().union(*hit, {u, v})
        groups = [g for g in groups if g not in hit] + [merged]
    return groups


class _Stop(Exception):
    pass


def test_a_run_resumes_where_it_stopped_and_merges_pairs_per_save_not_per_block(planted, monkeypatch):
    ix, truth = planted
    options = DedupOptions(k=5, min_score=0.95, rule="components", block_rows=BLOCK)
    monkeypatch.setattr(dedup_run, "SAVE_SECONDS", 0.0)              # saved after every block
    blocks = []

    def stop_after_five(p):
        if p.stage == "search":
            blocks.append(p.done)
            if len(blocks) == 5:
                raise _Stop

    with pytest.raises(_Stop):
        find_duplicates(ix, options, stop_after_five)
    merges = []
    add_pairs = DedupState.add_pairs
    monkeypatch.setattr(DedupState, "add_pairs", lambda self, p, s: merges.append(len(p)) or add_pairs(self, p, s))
    monkeypatch.setattr(dedup_run, "SAVE_SECONDS", 3600.0)
    result = find_duplicates(ix, options)
    assert result.summary["searched"] == N - 5 * BLOCK               # the saved blocks are not searched again
    assert len(merges) == 1                                          # N / BLOCK blocks, one merge
    assert {frozenset(g["ids"]) for g in result.groups} == truth and len(truth) == 40
    assert all(g["kind"] == "exact" for g in result.groups)
    again = find_duplicates(ix, options)
    assert again.summary["searched"] == 0 and {frozenset(g["ids"]) for g in again.groups} == truth
    # rows added: only they are read (by id) and searched, and a copy among them joins its original's group
    group = sorted(next(iter(truth)))
    index = create_index(ix, dim=D, model="none")
    x0 = index.store.take("images", group[:1], ["vector"]).column("vector").to_numpy(zero_copy_only=False)[0]
    hash0 = index.store.take("images", group[:1], ["hash"]).column("hash")[0].as_py()
    added = index.add_vectors("images", np.stack([x0, -x0]), {"hash": [hash0, "other"], "path": ["a.jpg", "b.jpg"]})
    index.close()
    monkeypatch.setattr(type(index.store), "iter_vectors_clustered", None)   # the whole table is not streamed
    merges.clear()
    grown = find_duplicates(ix, options)
    assert grown.summary["searched"] == 2 and len(merges) == 1
    assert frozenset(group) | {int(added[0])} in {frozenset(g["ids"]) for g in grown.groups}


def test_an_ivf_pq_disk_table_is_joined_list_by_list_with_rows_added_and_deleted_since(planted):
    from retrieval.ann.config import AnnConfig

    root, truth = planted
    ix = create_index(root, dim=D, model="none")
    ix.optimize("images", AnnConfig("ivf_pq_disk", 0, {"recall": 0.9, "tune": False, "build": {"nlist": 16}}))
    assert ix.store.ann_info("images")["kind"] == "ivf_pq_disk"
    rng = np.random.default_rng(2)
    base = next(iter(next(iter(truth))))                             # a planted group gets one more copy, added later
    x0 = np.concatenate([v for _, v in ix.store.iter_vectors("images")])[base]
    extra = np.concatenate([x0[None] + 0.05 * rng.standard_normal((1, D)) / np.sqrt(D),
                            rng.standard_normal((9, D))]).astype(np.float32)
    hash0 = ix.store.take("images", [base], ["hash"]).to_pylist()[0]["hash"]
    new = ix.add_vectors("images", extra, {"hash": [hash0] + [f"n{i}" for i in range(9)],
                                           "path": [f"n{i}.jpg" for i in range(10)]})
    gone = sorted(next(g for g in truth if base not in g))           # a planted group deleted whole
    ix.delete("images", gone)
    side = ix.store._sidecar("images")
    streamed = list(ix.store.iter_vectors_clustered("images", batch_rows=100))
    ids = np.concatenate([i for i, _ in streamed])
    ordinals = np.argsort(side.arrays()[1])                          # file row -> ordinal
    built = side.arrays()[0][ordinals]
    assert ids.tolist() == [i for i in built.tolist() if i not in gone] + new.tolist()   # list by list, then new
    table = dict(zip(*(np.concatenate(c) for c in zip(*ix.store.iter_vectors("images")))))
    assert all(np.allclose(v, table[i], atol=2e-3) for b, xs in streamed for i, v in zip(b, xs))
    ix.close()
    result = find_duplicates(root, DedupOptions(k=5, min_score=0.95, rule="components", block_rows=BLOCK))
    want = {g | {int(new[0])} if base in g else g for g in truth if g != frozenset(gone)}
    assert {frozenset(g["ids"]) for g in result.groups} == want and result.summary["searched"] == N + 10 - len(gone)

"""``Store.sample_vectors``: the uniform sample the ANN build trains on and tuning draws its queries from. The Lance
store reads it by offset (random access) instead of a pass over the table; both stores give ``rows`` distinct live
rows with their own vectors."""
from __future__ import annotations

import numpy as np
import pytest

from clipdex.synthetic.embeddings import unit_vectors
from retrieval.index.directory import create_index

D = 16
N = 4000


@pytest.fixture(params=["lance", "faiss"])
def index(tmp_path, request):
    ix = create_index(tmp_path / "ix", dim=D, model="none", backend=request.param)
    xb = unit_vectors(1, N, D)
    for part in np.array_split(np.arange(N), 4):
        ix.add_vectors("images", xb[part], {"path": [f"/p/{i}.png" for i in part]})
    yield ix, xb
    ix.close()


def test_the_sample_is_rows_distinct_live_rows_with_their_own_vectors_spread_over_the_table(index):
    ix, xb = index
    ids, x = ix.store.sample_vectors("images", 1000, seed=3)
    assert ids.shape == (1000,) and x.shape == (1000, D) and x.dtype == np.float32
    assert len(np.unique(ids)) == 1000 and (np.diff(ids) > 0).all()  # table order
    np.testing.assert_allclose(x, xb[ids], atol=2e-3)  # float16 storage allowed
    quarters = np.bincount(ids // (N // 4), minlength=4)
    assert quarters.min() > 180 and quarters.max() < 320  # 250 expected in each commit's rows
    again, _ = ix.store.sample_vectors("images", 1000, seed=3)
    other, _ = ix.store.sample_vectors("images", 1000, seed=4)
    np.testing.assert_array_equal(ids, again)
    assert len(np.intersect1d(ids, other)) < 500


def test_deleted_rows_are_never_drawn_and_asking_for_more_rows_than_there_are_gives_every_row(index):
    ix, xb = index
    gone = np.arange(0, N, 3)
    ix.delete("images", gone.tolist())
    ids, x = ix.store.sample_vectors("images", 500, seed=0)
    assert len(ids) == 500 and not np.isin(ids, gone).any()
    np.testing.assert_allclose(x, xb[ids], atol=2e-3)
    live = np.setdiff1d(np.arange(N), gone)
    ids, _ = ix.store.sample_vectors("images", 10 * N, seed=0)
    np.testing.assert_array_equal(np.sort(ids), live)


def test_the_lance_store_samples_without_a_pass_over_the_table(tmp_path, monkeypatch):
    ix = create_index(tmp_path / "ix", dim=D, model="none", backend="lance")
    xb = unit_vectors(2, N, D)
    ix.add_vectors("images", xb, {"path": [f"/p/{i}.png" for i in range(N)]})

    def no_scan(*args, **kwargs):
        raise AssertionError("the table was scanned")

    monkeypatch.setattr(ix.store, "scan", no_scan)
    ids, x = ix.store.sample_vectors("images", 700, seed=1)
    assert len(np.unique(ids)) == 700
    np.testing.assert_allclose(x, xb[ids], atol=2e-3)
    ix.close()

"""Both backends against the exact oracle: search, filters, deletes, persistence, repair, ANN paths."""
import numpy as np
import pyarrow as pa
import pytest

from clipdex.synthetic.embeddings import unit_vectors
from retrieval.ann.config import AnnConfig
from retrieval.errors import InvalidFilter, TableNotFound
from retrieval.index.directory import create_index, open_index
from tests.helpers import assert_same_topk, brute_force

BACKENDS = ["lance", "faiss"]
D = 24


def make(tmp_path, backend, n=503, batches=(0, 200, 401), seed=0):
    ix = create_index(tmp_path / f"ix-{backend}", dim=D, model="none", backend=backend)
    xb = unit_vectors(seed, n, D)
    edges = list(batches) + [n]
    for a, b in zip(edges[:-1], edges[1:]):
        ix.add_vectors("images", xb[a:b], {"path": [f"/p/{i}.png" for i in range(a, b)],
                                           "label": [["cat", "dog", "owl"][i % 3] for i in range(a, b)],
                                           "width": pa.array([100 + i for i in range(a, b)], pa.int32())})
    return ix, xb


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_search_matches_brute_force(tmp_path, backend):
    ix, xb = make(tmp_path, backend)
    xq = unit_vectors(1, 17, D)
    for k in (1, 10, 37):
        Dk, Ik = ix.search_vectors("images", xq, k)
        assert_same_topk(Dk, Ik, *brute_force(xq, xb, k))


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_larger_than_table_is_padded(tmp_path, backend):
    ix, xb = make(tmp_path, backend, n=7, batches=(0,))
    Dk, Ik = ix.search_vectors("images", xb[:2], 10)
    assert (Ik[:, :7] >= 0).all() and (Ik[:, 7:] == -1).all() and np.isneginf(Dk[:, 7:]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_filtered_search_returns_k_whenever_k_rows_match(tmp_path, backend):
    ix, xb = make(tmp_path, backend)
    xq = unit_vectors(2, 5, D)
    # a selective filter: 12 rows match, the nearest neighbours mostly do not
    Dk, Ik = ix.search_vectors("images", xq, 10, where="label = 'owl' AND width < 136")
    allowed = np.array([i for i in range(len(xb)) if i % 3 == 2 and 100 + i < 136])
    assert len(allowed) == 12
    Dr, Ir = brute_force(xq, xb[allowed], 10)
    assert_same_topk(Dk, Ik, Dr, allowed[Ir])
    Dk, Ik = ix.search_vectors("images", xq, 10, where="label = 'owl' AND width < 106")  # 2 rows match
    assert ((Ik >= 0).sum(1) == 2).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_filters_raise_invalid_filter(tmp_path, backend):
    ix, xb = make(tmp_path, backend, n=20, batches=(0,))
    for where in ("labl = 'cat'", "label = = 'cat'", "label = 'cat'; DROP TABLE images"):
        with pytest.raises(InvalidFilter):
            ix.search_vectors("images", xb[:1], 3, where=where)


@pytest.mark.parametrize("backend", BACKENDS)
def test_delete_count_take_scan_and_reopen(tmp_path, backend):
    ix, xb = make(tmp_path, backend)
    assert ix.store.count("images") == 503 and ix.store.count("images", "label = 'cat'") == 168
    assert ix.delete("images", [0, 5, 250, 9999]) == 3
    Dk, Ik = ix.search_vectors("images", xb[[0, 5]], 5)
    assert not np.isin(Ik, [0, 5, 250]).any()
    rows = ix.store.take("images", [7, 3, 400], ["path"])
    assert rows.column("path").to_pylist() == ["/p/7.png", "/p/3.png", "/p/400.png"]
    scanned = pa.Table.from_batches(list(ix.store.scan("images", ["id", "label"], where="label = 'dog'")))
    assert set(scanned.column("label").to_pylist()) == {"dog"} and len(scanned) == 167
    ix.close()
    ix = open_index(tmp_path / f"ix-{backend}")
    assert ix.store.count("images") == 500
    keep = np.setdiff1d(np.arange(503), [0, 5, 250])
    Dr, Ir = brute_force(xb[:9], xb[keep], 8)
    assert_same_topk(*ix.search_vectors("images", xb[:9], 8), Dr, keep[Ir])
    with pytest.raises(TableNotFound):
        ix.search_vectors("nope", xb[:1], 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nullable_text_vectors_are_searched_over_non_null_rows(tmp_path, backend):
    ix = create_index(tmp_path / "ix", dim=D, model="none", backend=backend)
    schema = ix.ensure_table("images")
    xb, tb = unit_vectors(3, 30, D), unit_vectors(4, 30, D)
    has = np.arange(30) % 2 == 0
    tv = pa.FixedSizeListArray.from_arrays(pa.array(tb.reshape(-1)), D, mask=pa.array(~has))
    cols = {f.name: pa.nulls(30, f.type) for f in schema}
    cols.update(id=pa.array(np.arange(30, dtype=np.int64)),
                vector=pa.FixedSizeListArray.from_arrays(pa.array(xb.reshape(-1)), D), text_vector=tv)
    ix.add_rows("images", pa.table(cols, schema=schema))
    Dk, Ik = ix.search_vectors("images", tb[:3], 20, column="text_vector")
    assert ((Ik >= 0).sum(1) == 15).all() and (Ik[Ik >= 0] % 2 == 0).all()
    Dr, Ir = brute_force(tb[:3], tb[has], 15)
    assert_same_topk(Dk[:, :15], Ik[:, :15], Dr, np.flatnonzero(has)[Ir])


def test_lance_and_faiss_give_the_same_exact_top_k(tmp_path):
    (a, _), (b, _) = make(tmp_path, "lance"), make(tmp_path, "faiss")
    xq = unit_vectors(9, 11, D)
    Da, Ia = a.search_vectors("images", xq, 15)
    Db, Ib = b.search_vectors("images", xq, 15)
    assert_same_topk(Da, Ia, Db, Ib)
    Da, Ia = a.search_vectors("images", xq, 15, where="label = 'dog'")
    Db, Ib = b.search_vectors("images", xq, 15, where="label = 'dog'")
    assert_same_topk(Da, Ia, Db, Ib)


def test_faiss_files_are_repaired_against_the_parquet_rows(tmp_path):
    import shutil

    ix, xb = make(tmp_path, "faiss")
    ix.close()
    root = tmp_path / "ix-faiss" / "faiss"
    stale = tmp_path / "stale.faiss"
    shutil.copy(root / "images.faiss", stale)
    ix = open_index(tmp_path / "ix-faiss", writable=True)
    ix.add_vectors("images", unit_vectors(7, 5, D), {"path": [f"/n/{i}" for i in range(5)]})
    ix.delete("images", [1, 2])
    ix.close()
    shutil.copy(stale, root / "images.faiss")  # as if the process died before flushing the FAISS file
    ix = open_index(tmp_path / "ix-faiss")
    all_x = np.concatenate([xb, unit_vectors(7, 5, D)])
    keep = np.setdiff1d(np.arange(508), [1, 2])
    xq = unit_vectors(8, 6, D)
    Dr, Ir = brute_force(xq, all_x[keep], 10)
    assert_same_topk(*ix.search_vectors("images", xq, 10), Dr, keep[Ir])
    ix.close()
    (root / "images.faiss").unlink()  # a missing FAISS file is rebuilt from the rows
    ix = open_index(tmp_path / "ix-faiss")
    assert_same_topk(*ix.search_vectors("images", xq, 10), Dr, keep[Ir])
    ix.close()
    open_index(tmp_path / "ix-faiss", writable=True).close()  # repair is a writer's job: after it, the file is back
    import faiss

    rebuilt = faiss.read_index(str(root / "images.faiss"))  # and holds exactly the 506 live rows
    assert rebuilt.ntotal == len(keep) == 506
    np.testing.assert_array_equal(np.sort(faiss.vector_to_array(rebuilt.id_map)), keep)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ann_path_recall_and_rows_added_after_the_build(tmp_path, backend):
    n = 3000
    ix, xb = make(tmp_path, backend, n=n, batches=(0, 1500))
    done = ix.optimize("images", AnnConfig(exact_below=1000))
    assert ix.store.ann_info("images")["kind"] != "flat", done
    xq = unit_vectors(5, 40, D)
    Dk, Ik = ix.search_vectors("images", xq, 10)
    _, Ir = brute_force(xq, xb, 10)
    recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(Ik, Ir)])
    assert recall >= 0.8, recall
    Dx, Ix = ix.search_vectors("images", xq, 10, exact=True)
    assert_same_topk(Dx, Ix, *brute_force(xq, xb, 10))
    fresh = unit_vectors(6, 3, D)
    new_ids = ix.add_vectors("images", fresh, {"path": ["a", "b", "c"]})
    _, Ik = ix.search_vectors("images", fresh, 1)
    assert (Ik[:, 0] == new_ids).all()
    ix.delete("images", new_ids[:1])
    _, Ik = ix.search_vectors("images", fresh[:1], 5)
    assert new_ids[0] not in Ik

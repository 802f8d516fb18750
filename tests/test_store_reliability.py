"""The stores under attack: stale derived files, readers racing a writer, rejected optimize calls, filters that fail
while they run, damaged parts. Each test reproduces a defect of issues 9 and 14; crash and race points are chosen
by events (monkeypatched hooks), never by sleeps."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pyarrow as pa
import pytest

from clipdex.synthetic.embeddings import unit_vectors
from retrieval.ann.config import AnnConfig
from retrieval.errors import IndexFormatError, InvalidFilter, InvalidInput
from retrieval.index.directory import create_index, open_index
from retrieval.store.faiss import FaissStore
from retrieval.store.lance import LanceStore
from tests.helpers import assert_same_topk, brute_force

D = 16
BACKENDS = ["lance", "faiss"]


def make(tmp_path, backend, n=60, batches=3, seed=0):
    """An index of n unit rows added in ``batches`` commits (ids 0..n-1), with path/label/width metadata."""
    ix = create_index(tmp_path / f"ix-{backend}", dim=D, model="none", backend=backend)
    xb = unit_vectors(seed, n, D)
    for part in np.array_split(np.arange(n), batches):
        ix.add_vectors("images", xb[part], {"path": [f"/p/{i}.png" for i in part],
                                            "label": [["cat", "dog"][i % 2] for i in part],
                                            "width": pa.array([100 + int(i) for i in part], pa.int32())})
    return ix, xb


def faiss_files(ix):
    root = ix.path / "faiss"
    return {p.name: p.read_bytes() for p in root.rglob("*") if p.is_file()}


# -- issue 14 #2: a stale .faiss must never pass for the current rows ---------------------------------------------
def test_ids_of_deleted_rows_are_never_reused_and_a_stale_faiss_file_is_not_trusted(tmp_path):
    ix, xb = make(tmp_path, "faiss")
    ix.close()
    root = tmp_path / "ix-faiss" / "faiss"
    stale = tmp_path / "stale.faiss"
    shutil.copy(root / "images.faiss", stale)
    ix = open_index(tmp_path / "ix-faiss", writable=True)
    ix.delete("images", [57, 58, 59])  # the highest ids
    ix.close()
    ix = open_index(tmp_path / "ix-faiss", writable=True)
    fresh = unit_vectors(42, 3, D)
    new_ids = ix.add_vectors("images", fresh, {"path": ["a", "b", "c"]})
    assert new_ids.min() >= 60  # never the deleted rows' ids
    ix.close()
    shutil.copy(stale, root / "images.faiss")  # as if killed between the Parquet commit and the FAISS write
    ix = open_index(tmp_path / "ix-faiss")
    live_x = np.concatenate([xb[:57], fresh])
    live_ids = np.concatenate([np.arange(57), new_ids])
    xq = np.concatenate([fresh, xb[57:], unit_vectors(7, 4, D)])
    Dr, Ir = brute_force(xq, live_x, 5)
    assert_same_topk(*ix.search_vectors("images", xq, 5), Dr, live_ids[Ir])
    ix.close()
    assert (root / "images.faiss").read_bytes() == stale.read_bytes()  # a reader repaired it in memory only
    ix = open_index(tmp_path / "ix-faiss", writable=True)
    ix.optimize("images")  # a writer rewrites it
    ix.close()
    assert (root / "images.faiss").read_bytes() != stale.read_bytes()
    ix = open_index(tmp_path / "ix-faiss")
    assert_same_topk(*ix.search_vectors("images", xq, 5), Dr, live_ids[Ir])
    ix.close()


# -- issue 9 / issue 14 #8: readers never write, and read a consistent snapshot ------------------------------------
def test_a_read_only_search_never_writes_a_faiss_file(tmp_path, monkeypatch):
    import faiss

    ix, xb = make(tmp_path, "faiss")
    ix.close()
    root = tmp_path / "ix-faiss" / "faiss"
    (root / "images.faiss").unlink()

    def refuse(*a, **k):
        raise AssertionError("a reader called faiss.write_index")

    monkeypatch.setattr(faiss, "write_index", refuse)
    before = faiss_files(open_index(tmp_path / "ix-faiss"))
    ix = open_index(tmp_path / "ix-faiss")
    Dr, Ir = brute_force(xb[:3], xb, 4)
    assert_same_topk(*ix.search_vectors("images", xb[:3], 4), Dr, Ir)
    ix.close()
    assert not (root / "images.faiss").exists()
    assert faiss_files(ix) == before


def test_a_reader_keeps_its_snapshot_while_a_writer_rewrites_and_compacts_parts(tmp_path):
    ix, xb = make(tmp_path, "faiss", batches=6)
    ix.close()
    reader = open_index(tmp_path / "ix-faiss")
    assert reader.store.count("images") == 60  # the reader has read the table's state
    writer = open_index(tmp_path / "ix-faiss", writable=True)
    writer.delete("images", [1, 11, 21, 31])  # rewrites parts
    writer.optimize("images")  # compacts the small parts into one
    writer.close()
    xq = unit_vectors(3, 5, D)
    Dr, Ir = brute_force(xq, xb, 6)
    assert_same_topk(*reader.search_vectors("images", xq, 6), Dr, Ir)  # its snapshot: all 60 rows
    assert reader.store.count("images", "label = 'cat'") == 30
    reader.close()


def test_a_reader_uses_a_faiss_file_a_writer_rewrote_since_brought_back_to_its_snapshot(tmp_path, caplog):
    ix, xb = make(tmp_path, "faiss")
    ix.close()
    reader = open_index(tmp_path / "ix-faiss")
    assert reader.store.count("images") == 60
    writer = open_index(tmp_path / "ix-faiss", writable=True)
    writer.add_vectors("images", unit_vectors(8, 5, D))
    writer.delete("images", [2, 4])
    writer.close()  # writes images.faiss for the new state
    xq = unit_vectors(3, 5, D)
    Dr, Ir = brute_force(xq, xb, 6)
    with caplog.at_level("INFO", logger="retrieval.store"):
        assert_same_topk(*reader.search_vectors("images", xq, 6), Dr, Ir)  # its snapshot: the 60 rows
    assert "repaired the vector index of images in memory: +2 -5 rows" in caplog.text  # not rebuilt from scratch
    reader.close()


def test_a_reader_whose_parts_are_gone_rereads_the_new_state(tmp_path, monkeypatch):
    from retrieval.store import faiss_parts

    monkeypatch.setattr(faiss_parts, "GRACE_SECONDS", 0.0)  # removed parts go at once
    ix, xb = make(tmp_path, "faiss", batches=6)
    ix.close()
    reader = open_index(tmp_path / "ix-faiss")
    assert reader.store.count("images") == 60
    writer = open_index(tmp_path / "ix-faiss", writable=True)
    writer.delete("images", [1, 11, 21, 31])
    writer.optimize("images")
    writer.close()
    keep = np.setdiff1d(np.arange(60), [1, 11, 21, 31])
    xq = unit_vectors(3, 5, D)
    Dr, Ir = brute_force(xq, xb[keep], 6)
    assert_same_topk(*reader.search_vectors("images", xq, 6), Dr, keep[Ir])
    assert reader.store.count("images", "label = 'dog'") == 30 - 4
    reader.close()


# -- issue 9 and issue 14 #12: optimize refuses a bad kind before touching anything -------------------------------
def _lance_versions(ix):
    table = ix.store.db.open_table("images")
    return [v["version"] for v in table.list_versions()]


@pytest.mark.parametrize("backend,kind", [("faiss", "bogus"), ("lance", "bogus"), ("lance", "HNSW_PQ"),
                                          ("faiss", "IVF_PQ")])
def test_optimize_with_an_unknown_kind_is_refused_and_changes_nothing(tmp_path, backend, kind):
    ix, xb = make(tmp_path, backend, batches=6)
    before = faiss_files(ix) if backend == "faiss" else _lance_versions(ix)
    with pytest.raises(InvalidInput, match="index kind|index type"):
        ix.optimize("images", AnnConfig(kind=kind, exact_below=0))
    after = faiss_files(ix) if backend == "faiss" else _lance_versions(ix)
    assert after == before
    ix.close()


@pytest.mark.parametrize("backend,kind", [("faiss", "bogus"), ("lance", "bogus"), ("lance", "HNSW_PQ")])
def test_the_optimize_command_refuses_a_bad_kind_in_one_line_and_changes_nothing(tmp_path, runner, cli, backend,
                                                                                   kind):
    ix, _ = make(tmp_path, backend, n=120, batches=6)
    ix.close()
    ix = open_index(tmp_path / f"ix-{backend}")
    before = faiss_files(ix) if backend == "faiss" else _lance_versions(ix)
    ix.close()
    res = runner.invoke(cli, ["optimize", str(tmp_path / f"ix-{backend}"), "--kind", kind, "--exact-below", "0"])
    lines = res.output.strip().splitlines()  # refused before any plan is printed
    assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: unknown"), res.output
    ix = open_index(tmp_path / f"ix-{backend}")
    assert (faiss_files(ix) if backend == "faiss" else _lance_versions(ix)) == before
    ix.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_flat_optimize_says_exact_search_needs_no_tuning(tmp_path, backend):
    from retrieval.index.optimize import OptimizeOptions, optimize_table

    ix, _ = make(tmp_path, backend)
    record = optimize_table(ix, "images", OptimizeOptions(recall=0.9))
    assert record["kind"] == "flat" and "recall_at_10" not in record
    assert record["note"] == "exact search needs no tuning"
    ix.close()


# -- issue 14 #11: a filter that fails while it runs is an InvalidFilter ------------------------------------------
RUNTIME_FAILURES = {"faiss": ["CAST(path AS INTEGER) = 1", "id = 'abc'", "error('boom') = 1"],
                    "lance": ["CAST(path AS INTEGER) = 1", "width / 0 > 1"]}


@pytest.mark.parametrize("backend,where", [(b, w) for b, ws in RUNTIME_FAILURES.items() for w in ws])
def test_filters_failing_at_run_time_raise_invalid_filter(tmp_path, backend, where):
    ix, xb = make(tmp_path, backend)
    for call in (lambda: ix.search_vectors("images", xb[:2], 3, where=where),
                 lambda: ix.store.count("images", where),
                 lambda: list(ix.store.scan("images", ["id"], where=where))):
        with pytest.raises(InvalidFilter) as err:
            call()
        assert "\n" not in str(err.value) and where in str(err.value)
    assert ix.store.count("images") == 60
    ix.close()


# -- issue 9: no deprecation warnings from our own LanceDB calls --------------------------------------------------
def test_lance_store_calls_raise_no_deprecation_warnings(tmp_path):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ix, xb = make(tmp_path, "lance", n=400, batches=2)
        ix.search_vectors("images", xb[:2], 3, where="label = 'cat'")
        ix.delete("images", [3])
        ix.optimize("images", AnnConfig(kind="IVF_PQ", exact_below=0))
        ix.search_vectors("images", xb[:2], 3)
        ix.close()
        open_index(tmp_path / "ix-lance").close()
    ours = [w for w in seen if issubclass(w.category, DeprecationWarning)]
    assert not ours, [str(w.message)[:120] for w in ours]


# -- issue 14 #11: damaged files are one clear line ----------------------------------------------------------------
def test_a_deleted_part_or_a_truncated_state_file_is_an_index_format_error(tmp_path):
    ix, xb = make(tmp_path, "faiss")
    ix.close()
    root = tmp_path / "ix-faiss" / "faiss"
    part = sorted((root / "images.parquet").glob("part-*.parquet"))[1]
    part.unlink()
    with pytest.raises(IndexFormatError, match=f"{part.name} is missing"):  # the index checks its tables at open
        open_index(tmp_path / "ix-faiss")
    store = FaissStore(root, dim=xb.shape[1])  # the store on its own: every read path says the same
    for call in (lambda: store.search("images", xb[:1], 3, where="label = 'cat'"),
                 lambda: list(store.scan("images")), lambda: store.count("images")):
        with pytest.raises(IndexFormatError, match=f"{part.name} is missing"):
            call()
    store.close()
    state = root / "images.state.json"
    state.write_bytes(state.read_bytes()[:40])
    with pytest.raises(IndexFormatError, match="images.state.json is damaged"):
        open_index(tmp_path / "ix-faiss").store.count("images")


# -- issue 14 (smaller): flipped bytes in a Parquet part are detected, not served ---------------------------------
def test_flipped_bytes_in_a_parquet_part_are_an_index_format_error(tmp_path):
    ix, xb = make(tmp_path, "faiss", n=400, batches=1)
    ix.close()
    (part,) = (tmp_path / "ix-faiss" / "faiss" / "images.parquet").glob("part-*.parquet")
    data = bytearray(part.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 8] = bytes(b ^ 0xFF for b in data[mid:mid + 8])
    part.write_bytes(bytes(data))
    ix = open_index(tmp_path / "ix-faiss")
    with pytest.raises(IndexFormatError, match="part-"):
        list(ix.store.scan("images"))
    ix.close()


# -- issue 14 #11: a Lance data file deleted under the index is one IndexFormatError line, not a filter error -----
def test_a_missing_lance_data_file_is_an_index_format_error_on_every_read(tmp_path):
    ix, xb = make(tmp_path, "lance")
    ix.close()
    for f in (tmp_path / "ix-lance" / "lance" / "images.lance" / "data").glob("*.lance"):
        f.unlink()
    store = LanceStore(tmp_path / "ix-lance" / "lance", dim=xb.shape[1])
    for call in (lambda: store.search("images", xb[:1], 3), lambda: list(store.scan("images")),
                 lambda: store.search("images", xb[:1], 3, where="label = 'cat'"),
                 lambda: store.take("images", [1, 2])):
        with pytest.raises(IndexFormatError, match="a Lance data file is missing or damaged"):
            call()

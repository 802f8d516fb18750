"""Issue 19 #3: filtered searches from many threads at once on a FAISS index (the service's search threads).

Before, every thread queried one shared DuckDB connection: 66 of 150 searches at concurrency 16 failed with
"bad --where expression ... connection is busy", an internal error blamed on a filter the client never sent."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from clipdex.synthetic.embeddings import unit_vectors
from retrieval.errors import IndexFormatError, InvalidFilter
from retrieval.index.directory import create_index, open_index

N, D, K = 600, 16, 5
LABELS = np.array(["cat", "dog", "bird"])[np.arange(N) % 3]
WIDTH = (np.arange(N) * 37) % 1000
FILTERS = [("label = 'cat'", LABELS == "cat"), ("width >= 500 AND label <> 'dog'", (WIDTH >= 500) & (LABELS != "dog")),
           ("label IN ('dog', 'bird') OR width < 100", np.isin(LABELS, ["dog", "bird"]) | (WIDTH < 100)),
           ("NOT (width BETWEEN 200 AND 800)", ~((WIDTH >= 200) & (WIDTH <= 800)))]


@pytest.fixture(scope="module", params=["plain", "case-variant"])
def faiss_index(request, tmp_path_factory):
    """A FAISS index in three Parquet parts; "case-variant" adds a ``Label`` column beside ``label`` (so that its
    parts are read through pyarrow rather than DuckDB's own reader)."""
    ix = create_index(tmp_path_factory.mktemp("threads") / "ix", dim=D, model="none", backend="faiss")
    x = unit_vectors(0, N, D)
    for s in range(0, N, 200):
        meta = {"label": LABELS[s:s + 200].tolist(), "width": WIDTH[s:s + 200]}
        if request.param == "case-variant":
            meta["Label"] = LABELS[::-1][s:s + 200].tolist()
        ix.add_vectors("items", x[s:s + 200], meta)
    yield ix, x
    ix.close()


def _expected(x: np.ndarray, q: np.ndarray, mask: np.ndarray) -> list[int]:
    scores = np.where(mask, x @ q, -np.inf)
    return np.argsort(-scores, kind="stable")[:K].tolist()


def test_concurrent_filtered_searches_all_succeed_with_the_right_rows(faiss_index):
    ix, x = faiss_index
    queries = unit_vectors(1, 160, D)

    def one(i: int):
        where, mask = FILTERS[i % len(FILTERS)]
        try:
            _, ids = ix.search_vectors("items", queries[i:i + 1], K, where=where)
            count = ix.store.count("items", where)
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none may happen
            return f"{type(exc).__name__}: {exc}"
        if ids[0].tolist() != _expected(x, queries[i], mask) or count != int(mask.sum()):
            return f"wrong rows for {where!r}"
        return None

    with ThreadPoolExecutor(16) as pool:   # 16 threads x 10 searches (and counts)
        errors = [e for e in pool.map(one, range(160)) if e is not None]
    assert errors == []


def test_an_engine_failure_is_an_internal_error_not_the_users_filter(faiss_index, monkeypatch):
    import duckdb

    ix, _ = faiss_index
    store = ix.store

    class Busy:   # DuckDB failing for its own reasons, whichever call reaches it
        def busy(self, *args, **kwargs):
            raise duckdb.InvalidInputException("Invalid Input Error: connection is busy")

        sql = from_arrow = busy

    for method in ("_cursor", "_duck"):
        monkeypatch.setattr(store._filter, method, lambda: Busy(), raising=False)
    with pytest.raises(Exception, match="internal error") as err:
        store.count("items", "label = 'cat'")
    assert not isinstance(err.value, InvalidFilter) and "--where" not in str(err.value)
    with pytest.raises(InvalidFilter, match="unknown column"):   # the user's own mistakes still are theirs
        store.count("items", "colour = 'red'")


def test_a_part_damaged_under_a_filter_is_reported_as_damage_not_as_the_filter(tmp_path):
    with create_index(tmp_path / "ix", dim=D, model="none", backend="faiss") as ix:
        ix.add_vectors("items", unit_vectors(0, 8, D), {"label": ["cat"] * 8})
    with open_index(tmp_path / "ix") as ix:   # opened (and checked) while the part was whole
        assert ix.store.count("items", "label = 'cat'") == 8
        next((tmp_path / "ix").rglob("part-*.parquet")).write_bytes(b"not parquet" * 64)
        with pytest.raises(IndexFormatError, match="is damaged"):
            ix.store.count("items", "label = 'cat'")


def test_a_lance_failure_that_is_not_the_filters_is_not_blamed_on_it(tmp_path, monkeypatch):
    with create_index(tmp_path / "ix", dim=D, model="none", backend="lance") as ix:
        ix.add_vectors("items", unit_vectors(0, 8, D), {"label": ["cat"] * 8})
        store, table = ix.store, ix.store._t("items")

        class Failing:   # the table, failing inside Lance's executor
            def __getattr__(self, name):
                return getattr(table, name)

            def count_rows(self, where=None):
                raise RuntimeError("Execution error: a task panicked while reading a batch")

        with monkeypatch.context() as m:
            m.setattr(store, "_t", lambda name: Failing())
            with pytest.raises(RuntimeError, match="Execution error") as err:
                store.count("items", "label = 'cat'")
        assert not isinstance(err.value, InvalidFilter)

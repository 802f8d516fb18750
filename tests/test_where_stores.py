"""Issue 14 #1 end to end: both stores check --where with retrieval.store.where before any engine runs it."""
import numpy as np
import pyarrow as pa
import pytest

from clipdex.synthetic.embeddings import unit_vectors
from retrieval.errors import InvalidFilter
from retrieval.index.directory import create_index

SECRET = "clipdex-secret-line"
ATTACKS = [
    "CAST((SELECT string_agg(column0,'|') FROM read_csv('{f}',header=false,sep='\\x01')) AS INTEGER)=1",
    "starts_with((SELECT content FROM read_text('{f}')),'clipdex')",
    "len(glob('{d}/*')) > 0",
    "path IN (SELECT file FROM glob('{d}/*'))",
    "CAST(path AS INTEGER)=1",
    "id='abc'",
    "error('boom')",
    "width/0>1",
    "1=1; DROP TABLE images",
    "label = 'cat' -- comment",
]


@pytest.fixture(params=["faiss", "lance"])
def ix(request, tmp_path):
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    index = create_index(tmp_path / "ix", dim=8, model="none", backend=request.param)
    index.add_vectors("images", unit_vectors(0, 6, 8), {"path": [f"/p/{i}.png" for i in range(6)],
                                                  "label": ["cat", "dog"] * 3,
                                                  "width": pa.array(range(100, 106), pa.int32())})
    yield index
    index.close()


@pytest.mark.parametrize("attack", ATTACKS)
def test_attacks_are_refused_by_both_stores_without_leaking(ix, tmp_path, attack):
    where = attack.format(f=tmp_path / "secret.txt", d=tmp_path)
    for call in (lambda: ix.search_vectors("images", unit_vectors(0, 1, 8), 3, where=where),
                 lambda: ix.store.count("images", where), lambda: list(ix.store.scan("images", ["id"], where=where))):
        with pytest.raises(InvalidFilter) as err:
            call()
        assert SECRET not in str(err.value) and "\n" not in str(err.value)


def test_plain_filters_still_work_on_both_stores(ix):
    _, ids = ix.search_vectors("images", unit_vectors(3, 2, 8), 6, where="label = 'cat' AND width >= 102")
    assert sorted(i for i in ids[0] if i >= 0) == [2, 4]
    assert ix.store.count("images", "path LIKE '/p/%' AND NOT (width BETWEEN 101 AND 104)") == 2
    got = pa.Table.from_batches(list(ix.store.scan("images", ["id"], where="id IN (1, 5) OR label IS NULL")))
    assert sorted(got.column("id").to_pylist()) == [1, 5]
    ix.add_vectors("notes", np.ones((2, 8)), {"when": ["2026-01-01", "2026-01-02"]})  # a keyword-named column
    assert ix.store.count("notes", "\"when\" = '2026-01-01'") == 1

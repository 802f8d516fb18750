"""``clipdex index texts --engine ray``: a file per task in a pool of embedding actors that write Lance fragments,
the driver committing and finishing each file: the same rows (counted: each (file, chunk) once), vectors, long-text
counts, errors and skips as the local engine; a changed file replaces its rows; --prune removes a gone file's.
Slow (Ray starts processes); two CPUs, a capped object store, loopback only."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexers import text_state
from indexers.text_sources import discover_texts
from indexers.text_state import SourceState, TextState
from indexers.texts import TextIndexOptions, index_texts
from retrieval.errors import InvalidInput
from retrieval.index.directory import create_index

ray = pytest.importorskip("ray", reason="the [ray] extra (in [dev])")
RAY_INIT = dict(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
OPTS = TextIndexOptions(split="paragraphs", commit_rows=64)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(**RAY_INIT)
    yield
    ray.shutdown()


def corpus(root):
    """Paragraphs (one over the 75-token window), JSONL with a duplicate text, a bad row and metadata, CSV, Parquet,
    a binary file and a latin-1 file (file errors)."""
    root.mkdir(parents=True)
    long = " ".join(["river", "tree", "small", "blue"] * 60)
    (root / "a.txt").write_text(f"a red square\n\n{long}\n\n\na dog by the house\n")
    with open(root / "c.jsonl", "w") as f:
        for i, t in enumerate(["a cat", "same text", None, "same text", "a bird"]):
            f.write(json.dumps({"text": t, "lang": "en", "n": i}) + "\n")
    (root / "d.csv").write_text('text,author\n"a red car, parked",ann\nsame text,bob\n,cy\n')
    pq.write_table(pa.table({"text": ["one", "two", "three"], "score": [0.5, 1.5, 2.5]}), root / "e.parquet")
    (root / "bin.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (root / "latin1.md").write_bytes("caf\xe9 au lait".encode("latin-1"))
    return root


def rows(ix) -> dict:
    listed = pa.Table.from_batches(list(ix.store.scan("texts"))).to_pylist()
    out = {(os.path.basename(r["source"]), r["chunk"]): r for r in listed}
    assert len(out) == len(listed) == ix.store.count("texts")  # no (file, chunk) stored twice
    return out


def errors(ix) -> list:
    got = pa.Table.from_batches(list(ix.store.scan("errors", ["path", "stage", "reason"]))).to_pylist()
    return sorted((os.path.basename(e["path"]), e["stage"], e["reason"]) for e in got)


def same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, r in a.items():
        for col in ("text", "n_tokens", "n_chunks", "strategy", "hash", "lang", "author", "score", "mtime", "bytes"):
            assert r.get(col) == b[k].get(col), (k, col)
        np.testing.assert_allclose(r["vector"], b[k]["vector"], atol=1e-5)


@pytest.mark.slow
def test_ray_and_local_engines_store_the_same_texts(tmp_path, local_ray):
    from indexers.ray_texts import index_texts_ray

    found = discover_texts([str(corpus(tmp_path / "c"))])
    with create_index(tmp_path / "local", model="clipdex-tiny") as ix:
        local_sum = index_texts(ix, found, OPTS).as_dict()
        local, local_err = rows(ix), errors(ix)
    with create_index(tmp_path / "ray", model="clipdex-tiny") as ix:
        ray_sum = index_texts_ray(ix, found, OPTS).as_dict()
        remote, remote_err = rows(ix), errors(ix)
        assert ix.manifest["tables"]["texts"]["partial"] == []
        again = index_texts_ray(ix, found, OPTS).as_dict()
        assert ix.store.count("texts") == len(remote) and errors(ix) == remote_err
    for k in ("files", "rows", "errors", "long", "chunked", "truncated", "unchanged", "known_errors"):
        assert local_sum[k] == ray_sum[k], k
    assert ray_sum["rows"] == 12 and ray_sum["long"] == 1 and ray_sum["errors"] == 4
    same(local, remote)
    assert local_err == remote_err
    assert (again["files"], again["unchanged"], again["known_errors"], again["rows"]) == (0, 4, 2, 0)


@pytest.mark.slow
def test_the_per_source_state_matches_the_per_row_one_without_holding_a_row(tmp_path, monkeypatch):
    """``SourceState`` (the Ray driver's) gives each source the generations, file errors and versions that
    ``TextState`` (per row) gives, and finds the same error ids to drop; what it keeps grows with the files only."""
    root = corpus(tmp_path / "c")
    with create_index(tmp_path / "ix", model="clipdex-tiny") as ix:
        index_texts(ix, discover_texts([str(root)]), OPTS)
        (root / "a.txt").write_text("changed\n")  # a second generation of a.txt's rows, as a killed run leaves
        index_texts(ix, discover_texts([str(root)]), TextIndexOptions(split="paragraphs", optimize=False))
        ix.add_vectors("texts", np.ones((1, ix.dim), np.float32), {"source": [str(root / "a.txt")], "chunk": [9],
                                                                    "mtime": [1.0], "bytes": [5], "hash": ["x"]})
        full, lean = TextState(ix), SourceState(ix)
        assert lean.gens == full.gens and len(lean.gens[str(root / "a.txt")]) == 2
        assert lean.file_errors == full.file_errors and len(lean.file_errors) == 2  # bin.txt, latin1.md
        assert lean.sources() == full.sources() and lean.by_hash == {} and len(full.by_hash) > 5
        for src in full.sources():
            assert lean.versions(src) == full.versions(src), src
            assert sorted(lean.pop_error_ids(src)) == sorted(full.pop_error_ids(src)), src
        assert sum(map(len, lean.gens.values())) + len(lean.row_errors) < ix.store.count("texts")

        def whole_rows(*args, **kwargs):
            raise AssertionError("the per-row state was loaded")
        monkeypatch.setattr(text_state, "scan_tuples", whole_rows)  # only a dropped row error's lookup may scan
        SourceState(ix)


@pytest.mark.slow
def test_a_changed_file_replaces_its_rows_and_prune_removes_a_gone_one(tmp_path, local_ray, monkeypatch):
    from indexers.ray_texts import index_texts_ray

    root = corpus(tmp_path / "c")
    with create_index(tmp_path / "ray", model="clipdex-tiny") as ix:
        index_texts_ray(ix, discover_texts([str(root)]), OPTS)

        def every_row(*args, **kwargs):
            raise AssertionError("the driver loaded every row's state")
        monkeypatch.setattr(TextState, "__init__", every_row)  # the re-run plans per file (SourceState)
        (root / "a.txt").write_text("a new first paragraph\n\nand a second\n")
        (root / "latin1.md").write_text("café au lait")
        (root / "e.parquet").unlink()
        s = index_texts_ray(ix, discover_texts([str(root)]), TextIndexOptions(split="paragraphs", prune=True))
        got = rows(ix)
        assert (s.files, s.replaced, s.removed) == (2, 3, 3)
        assert {c: r["text"] for (f, c), r in got.items() if f == "a.txt"} == {0: "a new first paragraph",
                                                                               1: "and a second"}
        assert got[("latin1.md", 0)]["text"] == "café au lait" and not any(f == "e.parquet" for f, _ in got)
        assert [e for e in errors(ix) if e[0] == "latin1.md"] == []


def test_the_faiss_backend_is_refused_in_one_line(tmp_path):
    from indexers.ray_texts import index_texts_ray

    with create_index(tmp_path / "f", model="clipdex-tiny", backend="faiss") as ix:
        with pytest.raises(InvalidInput, match="writes Lance fragments.*faiss backend"):
            index_texts_ray(ix, discover_texts([str(corpus(tmp_path / "c"))]))

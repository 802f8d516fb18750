"""``clipdex index embeddings``: clip-retrieval folders, .npy + Parquet, Parquet vector columns; bad input refused
with one line (index untouched), NaN/zero vectors into ``errors``; ``clipdex search --vectors``."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cli.main import cli
from clipdex.synthetic.embeddings import clustered, make_clip_retrieval_dir
from retrieval.errors import InvalidInput
from retrieval.index.directory import open_index

D = 16


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_clip_retrieval_layout_is_indexed_with_metadata_captions_and_errors(tmp_path):
    xs = make_clip_retrieval_dir(tmp_path / "src")
    res = run("index", "embeddings", tmp_path / "src", "--index", tmp_path / "ix", "--backend", "faiss", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["added"] == 500 - 4 and summary["errors"] == 4
    ix = open_index(tmp_path / "ix")
    assert ix.model == "none" and ix.store.count("images") == 496
    errs = ix.store.scan("errors", ["path", "stage", "reason"])
    errs = pa.Table.from_batches(list(errs)).to_pylist()
    assert {e["path"].rsplit("#", 1)[1] for e in errs} == {"5", "7"} and {e["stage"] for e in errs} == {"vector"}
    assert any("zeros" in e["reason"] for e in errs) and any("NaN" in e["reason"] for e in errs)
    row = ix.store.take("images", [0]).to_pylist()[0]
    assert row["path"] == "img0_0.jpg" and row["caption"] == "caption 0 0" and row["text_vector"] is not None
    x = np.asarray(row["vector"], np.float32)
    np.testing.assert_allclose(x, xs[0][0] / np.linalg.norm(xs[0][0]), rtol=1e-5)
    ix.close()
    res = run("index", "embeddings", tmp_path / "src", "--index", tmp_path / "ix", "--json")  # already indexed
    assert json.loads(res.output)["skipped_files"] == 2 and json.loads(res.output)["added"] == 0


def test_search_with_a_vectors_file_answers_every_row(tmp_path):
    xs = make_clip_retrieval_dir(tmp_path / "src", bad=False)
    run("index", "embeddings", tmp_path / "src", "--index", tmp_path / "ix")
    np.save(tmp_path / "q.npy", xs[0][[3, 40, 41]])
    res = run("search", tmp_path / "ix", "--vectors", tmp_path / "q.npy", "-k", "2", "--json")
    assert res.exit_code == 0, res.output
    hits = [json.loads(line) for line in res.output.splitlines()]
    assert [(h["query"], h["rank"]) for h in hits] == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert [h["id"] for h in hits if h["rank"] == 1] == [3, 40, 41]
    assert hits[0]["path"] == "img0_3.jpg"
    res = run("search", tmp_path / "ix", "a dog")
    assert res.exit_code == 1 and "unknown model" in res.output and "vectors" in res.output


def test_parquet_with_a_vector_column(tmp_path):
    x = clustered(120, D, seed=4)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), D)
    pq.write_table(pa.table({"embedding": vec, "url": [f"u{j}" for j in range(120)], "score": np.arange(120.0)}),
                   tmp_path / "v.parquet", row_group_size=50)
    res = run("index", "embeddings", tmp_path / "v.parquet", "--index", tmp_path / "ix", "--json")
    assert res.exit_code == 0, res.output
    ix = open_index(tmp_path / "ix")
    D_, I = ix.search_vectors("images", x[[7, 99]], 1)
    assert I[:, 0].tolist() == [7, 99]
    assert ix.store.take("images", [99], ["path", "score"]).to_pylist() == [{"path": "u99", "score": 99.0}]
    ix.close()


@pytest.mark.parametrize("breakage,message", [
    ("dim", "dimension mismatch"),
    ("metadata", "metadata rows"),
    ("nofiles", "no .npy or Parquet"),
    ("extra_metadata", "10 rows too many"),
    ("int8", "holds int8 values"),
    ("bool", "holds bool values"),
    ("complex", "holds complex64 values"),
])
def test_bad_sources_fail_with_one_line_before_touching_the_index(tmp_path, breakage, message):
    src = tmp_path / "src"
    if breakage == "nofiles":
        src.mkdir()
    else:
        make_clip_retrieval_dir(src, bad=False)
    if breakage == "dim":
        np.save(src / "img_emb" / "img_emb_1.npy", clustered(200, D + 1))
    if breakage == "metadata":
        pq.write_table(pa.table({"image_path": ["a"] * 150}), src / "metadata" / "metadata_1.parquet")
    if breakage == "extra_metadata":  # row j describes vector j: 10 rows more than vectors is no pairing at all
        pq.write_table(pa.table({"image_path": ["a"] * 210}), src / "metadata" / "metadata_1.parquet")
    if breakage in ("int8", "bool", "complex"):  # complex would silently lose its imaginary part
        x = clustered(200, D)
        bad = {"int8": (x * 100).astype(np.int8), "bool": x > 0, "complex": x.astype(np.complex64) * (1 + 1j)}
        np.save(src / "img_emb" / "img_emb_1.npy", bad[breakage])
    res = run("index", "embeddings", src, "--index", tmp_path / "ix")
    assert res.exit_code == 1 and res.output.startswith("error: ") and message in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "ix").exists()


def test_a_parquet_vector_column_of_integers_is_refused(tmp_path):
    vec = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(10 * D, dtype=np.int8)), D)
    pq.write_table(pa.table({"embedding": vec, "url": [f"u{j}" for j in range(10)]}), tmp_path / "v.parquet")
    res = run("index", "embeddings", tmp_path / "v.parquet", "--index", tmp_path / "ix")
    assert res.exit_code == 1 and res.output.startswith("error: ") and "int8 values" in res.output
    assert not (tmp_path / "ix").exists()


def test_an_empty_file_is_reported_empty_not_already_indexed(tmp_path):
    make_clip_retrieval_dir(tmp_path / "src", sizes=(0, 20), bad=False)
    for attempt in range(2):
        res = run("index", "embeddings", tmp_path / "src", "--index", tmp_path / "ix", "--json")
        assert res.exit_code == 0, res.output
        summary = json.loads(res.output.splitlines()[-1])
        assert summary["empty_files"] == 1
        assert (summary["files"], summary["skipped_files"], summary["added"]) == ((1, 0, 20) if attempt == 0
                                                                                  else (0, 1, 0))
    res = run("index", "embeddings", tmp_path / "src", "--index", tmp_path / "ix2")
    assert res.exit_code == 0 and "skipped 0 already indexed" in res.output and "1 empty" in res.output


@pytest.mark.parametrize("command", [("search", "IX", "--vectors", "Q"), ("optimize", "IX", "--queries", "Q")])
def test_a_query_file_with_no_rows_is_one_line(tmp_path, command):
    make_clip_retrieval_dir(tmp_path / "src", bad=False)
    run("index", "embeddings", tmp_path / "src", "--index", tmp_path / "ix")
    np.save(tmp_path / "q.npy", np.zeros((0, D), np.float32))
    res = run(*[{"IX": tmp_path / "ix", "Q": tmp_path / "q.npy"}.get(a, a) for a in command])
    assert res.exit_code == 1 and res.output.startswith("error: ") and len(res.output.strip().splitlines()) == 1
    assert "holds no vectors" in res.output


def test_metadata_columns_a_store_cannot_name_are_renamed_and_the_index_refuses_them_itself(tmp_path):
    x = clustered(10, D, seed=5)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), D)
    pq.write_table(pa.table({"embedding": vec, "a.b": [str(j) for j in range(10)], "_x": ["p"] * 10}),
                   tmp_path / "v.parquet")
    res = run("index", "embeddings", tmp_path / "v.parquet", "--index", tmp_path / "ix", "--json")
    assert res.exit_code == 0, res.output
    ix = open_index(tmp_path / "ix", writable=True)
    names = ix.store.schema("images").names
    assert "a_b" in names and "a.b" not in names and "_x" not in names
    assert ix.store.take("images", [7], ["a_b"]).to_pylist() == [{"a_b": "7"}]
    with pytest.raises(InvalidInput, match="'we`ird' cannot be stored"):  # the index's own guard, for any writer
        ix.ensure_table("images", [pa.field("we`ird", pa.string())])
    assert "we`ird" not in ix.store.schema("images").names
    ix.close()


def test_small_files_share_fragments_so_the_import_writes_every_row_once(tmp_path, monkeypatch):
    """Files smaller than a block are committed together: every fragment the import writes holds at least a
    block, so compaction (which merges smaller fragments) rewrites none and the table is not stored twice."""
    import lance

    import retrieval.store.lance_compact as lc
    from indexers.embedding_sources import discover_embeddings
    from indexers.embeddings import index_embeddings
    from retrieval.index.directory import create_index

    monkeypatch.setattr(lc, "FRAGMENT_ROWS", 2048)  # the import's block below
    make_clip_retrieval_dir(tmp_path / "src", dim=8, sizes=(1500, 1500, 1500, 700), bad=False)
    with create_index(tmp_path / "ix", dim=8, model="none", backend="lance") as ix:
        summary = index_embeddings(ix, discover_embeddings(tmp_path / "src"), batch_rows=2048)
        assert summary.added == 5200 and ix.store.count("images") == 5200
        uri = ix.store._t("images").to_lance().uri
    ds = lance.dataset(uri)
    sizes = sorted(f.count_rows() for f in ds.get_fragments())
    assert sizes == [2200, 3000]  # 1500 + 1500, then 1500 + the last file's 700 (the run's end)
    files = list((tmp_path / "ix").rglob("images.lance/data/*.lance"))
    assert len(files) == 2  # no data file rewritten by the compaction at the end of the run
    rows = pa.Table.from_batches(list(open_index(tmp_path / "ix").store.scan("images", ["source_file",
                                                                                        "source_row"])))
    assert len(set(zip(*rows.to_pydict().values()))) == 5200  # every row once, from its file and row

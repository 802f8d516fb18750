"""The text indexer: documents and tables, dedupe by text, incremental and resumable runs, errors, long texts."""
import json
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexers.text_sources import TextFile, discover_texts, read_rows
from indexers.text_state import FileLedger
from indexers.texts import TextIndexOptions, index_texts
from retrieval.encode.text import encode_long_texts
from retrieval.errors import InvalidInput
from retrieval.index.directory import create_index, open_index
from retrieval.store.base import arrow_to_vectors

WORDS = ["dog", "cat", "tree", "house", "river", "car", "bird", "red", "blue", "small"]


def words(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))


def write_corpus(root):
    """a.txt: 3 paragraphs (one of 200 words); c.jsonl: 5 rows, two identical; d.csv: 3 rows; e.parquet: 4 rows."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text(f"{words(12, 1)}\n\n{words(200, 2)}\n\n\n{words(6, 3)}\n")
    with open(root / "c.jsonl", "w") as f:
        for i, text in enumerate([words(8, 10), "same text", words(9, 11), "same text", words(7, 12)]):
            f.write(json.dumps({"text": text, "lang": "en", "n": i, "id": f"c{i}"}) + "\n")
    (root / "d.csv").write_text('text,author\n"a red car, parked",ann\nsame text,bob\n' + words(5, 20) + ",cy\n")
    pq.write_table(pa.table({"text": [words(6, 30 + i) for i in range(4)], "score": [0.5, 1.5, 2.5, 3.5]}),
                   root / "e.parquet")
    return root


def run(ix, *sources, **kw):
    opts = TextIndexOptions(**{"split": "paragraphs", "commit_rows": 64, **kw})
    return index_texts(ix, discover_texts([str(s) for s in sources], opts.text_column), opts)


def table(ix, name="texts", cols=None):
    if not ix.store.has_table(name) or not ix.store.count(name):
        return pa.table({})
    return pa.Table.from_batches(list(ix.store.scan(name, cols)))


def by_source(ix):
    t = table(ix, cols=["source", "chunk", "text"]).to_pylist()
    out = {}
    for r in t:
        out.setdefault(os.path.basename(r["source"]), {})[r["chunk"]] = r["text"]
    return out


@pytest.fixture(params=["lance", "faiss"])
def ix(request, tmp_path):
    index = create_index(tmp_path / "ix", model="clipdex-tiny", backend=request.param)
    yield index
    index.close()


@pytest.fixture
def lx(tmp_path):
    index = create_index(tmp_path / "ix", model="clipdex-tiny")
    yield index
    index.close()


def test_documents_and_tables_become_rows_with_metadata_and_identical_texts_are_embedded_once(ix, tmp_path, tiny):
    corpus = write_corpus(tmp_path / "corpus")
    s = run(ix, corpus)
    got = by_source(ix)
    assert sorted(got) == ["a.txt", "c.jsonl", "d.csv", "e.parquet"]
    assert got["a.txt"] == {0: words(12, 1), 1: words(200, 2), 2: words(6, 3)}  # paragraphs numbered from 0
    assert got["c.jsonl"][3] == "same text" and got["d.csv"][0] == "a red car, parked" and len(got["e.parquet"]) == 4
    assert (s.files, s.rows, s.errors) == (4, 15, 0)
    assert (s.encoded, s.reused) == (13, 2)  # "same text" three times: embedded once
    assert (s.long, s.chunked, s.truncated) == (1, 1, 0)
    assert ix.manifest["tables"]["texts"]["long_text"] == "chunk" and ix.manifest["tables"]["texts"]["partial"] == []
    t = table(ix)
    rows = t.drop_columns(["vector"]).to_pylist()
    vecs, _ = arrow_to_vectors(t.column("vector"), ix.dim)
    meta = {(os.path.basename(r["source"]), r["chunk"]): r for r in rows}
    assert meta[("c.jsonl", 2)]["lang"] == "en" and meta[("c.jsonl", 2)]["n"] == "2"
    assert meta[("c.jsonl", 2)]["meta_id"] == "c2"  # a column named like one of the table's own is renamed
    assert meta[("d.csv", 1)]["author"] == "bob" and meta[("e.parquet", 3)]["score"] == "3.5"
    long = meta[("a.txt", 1)]
    assert (long["n_tokens"], long["n_chunks"], long["strategy"]) == (200, 4, "chunk")
    # each stored vector is the long-text encoding of its text; identical texts share one vector
    ref = encode_long_texts(tiny, [r["text"] for r in rows], "chunk").vectors
    np.testing.assert_allclose(vecs, ref, atol=1e-5)
    same = [i for i, r in enumerate(rows) if r["text"] == "same text"]
    assert len(same) == 3 and len({r["hash"] for i, r in enumerate(rows) if i in same}) == 1


def test_unchanged_files_are_skipped_and_a_changed_file_replaces_its_rows(ix, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    run(ix, corpus)
    again = run(ix, corpus)
    assert (again.files, again.unchanged, again.rows, again.encoded) == (0, 4, 0, 0)
    before = table(ix, cols=["id", "source", "chunk"]).to_pylist()
    with open(corpus / "c.jsonl", "a") as f:  # two new rows: one new text, one already stored (from d.csv)
        f.write(json.dumps({"text": "a brand new text"}) + "\n" + json.dumps({"text": "a red car, parked"}) + "\n")
    s = run(ix, corpus)
    assert (s.files, s.unchanged, s.rows, s.encoded, s.reused, s.replaced) == (1, 3, 7, 1, 6, 5)
    got = by_source(ix)
    assert len(got["c.jsonl"]) == 7 and got["c.jsonl"][5] == "a brand new text"
    old_c = {r["id"] for r in before if r["source"].endswith("c.jsonl")}
    now_ids = set(table(ix, cols=["id"]).column("id").to_pylist())
    assert not old_c & now_ids and len(now_ids) == 17  # old rows gone, the others kept their ids
    os.remove(corpus / "e.parquet")
    kept = run(ix, corpus)
    assert kept.removed == 0 and "e.parquet" in by_source(ix)
    pruned = run(ix, corpus, prune=True)
    assert pruned.removed == 4 and "e.parquet" not in by_source(ix)


def test_a_new_file_with_stored_texts_reuses_their_vectors(lx, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    run(lx, corpus)
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "x.txt").write_text(words(200, 2))  # the long paragraph of a.txt, as a document
    s = run(lx, tmp_path / "more")
    assert (s.rows, s.encoded, s.reused, s.chunked) == (1, 0, 1, 1)


def test_an_interrupted_run_resumes_and_ends_like_a_clean_run(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with open(corpus / "big.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"text": words(6, 100 + i)}) + "\n")
    (corpus / "z.txt").write_text(words(10, 5))
    ix = create_index(tmp_path / "ix", model="clipdex-tiny")
    calls = {"n": 0}
    real_add = ix.add_rows

    def crashing_add(name, rows):
        if name == "texts":
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt  # killed while committing the third block
        real_add(name, rows)

    monkeypatch.setattr(ix, "add_rows", crashing_add)
    with pytest.raises(KeyboardInterrupt):
        run(ix, corpus, commit_rows=8, batch_size=4)
    assert ix.manifest["tables"]["texts"]["partial"] == [str(corpus / "big.jsonl")]
    assert ix.store.count("texts") == 16
    ix.close()  # the lock goes; what was committed stays
    monkeypatch.undo()
    ix = open_index(tmp_path / "ix", writable=True)
    s = run(ix, corpus, commit_rows=8, batch_size=4)
    assert (s.files, s.encoded, s.reused, s.replaced) == (2, 25, 16, 16)  # committed texts were not embedded again
    got = by_source(ix)
    assert got["big.jsonl"] == {i: words(6, 100 + i) for i in range(40)} and len(got["z.txt"]) == 1
    assert ix.store.count("texts") == 41 and ix.manifest["tables"]["texts"]["partial"] == []
    assert run(ix, corpus).unchanged == 2
    ix.close()


def test_two_generations_of_a_file_left_by_a_crash_are_repaired_newest_first(lx, tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus")
    run(lx, corpus)
    (corpus / "a.txt").write_text("one new paragraph\n\nand another")
    monkeypatch.setattr(FileLedger, "finalize", lambda self, source: None)  # crash before old rows are deleted
    run(lx, corpus)
    monkeypatch.undo()
    lx.manifest["tables"]["texts"]["partial"] = []  # ... and after the file's marker was cleared
    assert len([r for r in table(lx, cols=["source"]).column("source").to_pylist() if r.endswith("a.txt")]) == 5
    s = run(lx, corpus)
    assert s.unchanged == 4 and by_source(lx)["a.txt"] == {0: "one new paragraph", 1: "and another"}


def test_bad_files_and_rows_go_to_errors_and_are_skipped_until_they_change(lx, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("a good text")
    (corpus / "bin.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00binary")
    (corpus / "latin1.md").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with open(corpus / "rows.jsonl", "w") as f:
        for obj in [{"text": "fine"}, {"text": None}, {"text": ""}, {"text": 42}, {"other": "x"}, [1, 2]]:
            f.write(json.dumps(obj) + "\n")
        f.write("{not json\n")
    (corpus / "rows.csv").write_text("text,k\nok,1\n,2\n")
    s = run(lx, corpus)
    assert (s.rows, s.errors) == (3, 9)
    errs = table(lx, "errors", ["path", "stage", "reason", "source_table"]).to_pylist()
    assert {e["source_table"] for e in errs} == {"texts"}
    files = {os.path.basename(e["path"]): (e["stage"], e["reason"]) for e in errs if e["stage"] != "row"}
    assert files == {"bin.txt": ("decode", "binary file (NUL bytes), not text"),
                     "latin1.md": ("decode", "not UTF-8 text (invalid byte at offset 3)")}
    reasons = sorted(e["reason"] for e in errs if e["stage"] == "row")
    assert reasons == ["row 1: text is empty", "row 1: text is null", "row 2: text is empty",
                       "row 3: text is a int, not a string", "row 4: no 'text' field",
                       "row 5: not a JSON object but a list", "row 6: invalid JSON (Expecting property name enclosed "
                       "in double quotes)"]
    again = run(lx, corpus)
    assert (again.known_errors, again.unchanged, again.errors, again.files) == (2, 3, 0, 0)
    assert lx.store.count("errors") == 9
    (corpus / "latin1.md").write_text("café au lait")  # fixed: its error row goes, its text comes
    fixed = run(lx, corpus)
    assert (fixed.files, fixed.rows, fixed.errors) == (1, 1, 0) and lx.store.count("errors") == 8
    assert by_source(lx)["latin1.md"] == {0: "café au lait"}


def test_truncate_is_counted_and_warned_and_the_table_keeps_its_strategy(lx, tmp_path, caplog):
    corpus = write_corpus(tmp_path / "corpus")
    with caplog.at_level(logging.WARNING):
        s = run(lx, corpus, long_text="truncate")
    assert (s.long, s.truncated, s.chunked) == (1, 1, 0)
    assert any("truncated (--long-text truncate)" in r.getMessage() for r in caplog.records)
    assert lx.manifest["tables"]["texts"]["long_text"] == "truncate"
    with pytest.raises(InvalidInput, match="built with --long-text truncate"):
        run(lx, corpus, long_text="chunk")


def test_longclip_rows_are_stretched_not_chunked(lx, tmp_path, tiny):
    corpus = write_corpus(tmp_path / "corpus")
    s = run(lx, corpus, long_text="longclip")
    assert (s.long, s.stretched, s.chunked, s.truncated) == (1, 1, 0, 0)
    row = [r for r in table(lx).to_pylist() if r["n_tokens"] == 200][0]
    assert (row["n_chunks"], row["strategy"]) == (1, "longclip")
    ref = encode_long_texts(tiny, [row["text"]], "longclip").vectors[0]
    np.testing.assert_allclose(np.asarray(row["vector"], np.float32), ref, atol=1e-5)


def test_readers_number_lines_and_paragraphs_and_stream_parquet_in_batches(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("first\n\nsecond line\nstill second\n\n\n\nthird\n")
    f = TextFile(str(p), p.stat().st_size, p.stat().st_mtime, "doc")
    assert [(r.chunk, r.text) for r in read_rows(f, split="paragraphs")] == [
        (0, "first"), (1, "second line\nstill second"), (2, "third")]
    assert [(r.chunk, r.text) for r in read_rows(f, split="lines")] == [
        (0, "first"), (2, "second line"), (3, "still second"), (7, "third")]
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(2500)], "k": list(range(2500))}), tmp_path / "x.parquet",
                   row_group_size=1000)
    f = TextFile(str(tmp_path / "x.parquet"), 0, 0.0, "parquet")
    it = read_rows(f)
    first = next(it)  # a generator: rows come before the file is read to its end
    assert (first.chunk, first.text, first.meta) == (0, "t0", {"k": "0"})
    rest = list(it)
    assert len(rest) == 2499 and rest[-1].chunk == 2499 and rest[-1].text == "t2499"


def test_discovery_refuses_what_cannot_be_indexed(tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02")
    (tmp_path / "empty.txt").write_text("  \n\n")
    (tmp_path / "nocol.jsonl").write_text('{"body": "x"}\n')
    (tmp_path / "nocol.csv").write_text("body\nx\n")
    (tmp_path / "img.png").write_bytes(b"\x89PNG")
    (tmp_path / "empty_dir").mkdir()
    cases = [("bin.txt", "binary file"), ("empty.txt", "every file is empty"),
             ("nocol.jsonl", "no 'text' field in its first rows (fields: body)"),
             ("nocol.csv", "no 'text' column (columns: body)"), ("img.png", "is not a text file"),
             ("empty_dir", "no text files in"), ("missing.txt", "source not found")]
    for name, msg in cases:
        with pytest.raises(InvalidInput, match=msg.replace("(", r"\(").replace(")", r"\)")):
            discover_texts([str(tmp_path / name)])
    assert len(discover_texts([str(tmp_path / "nocol.csv")], text_column="body").files) == 1


def test_metadata_fields_a_store_cannot_name_are_renamed_or_left_out(ix, tmp_path):
    """A CSV header, a JSONL key or a Parquet column named ``a.b`` (or with a backquote) would poison a Lance schema
    for every later run: stored as ``a_b`` on both backends, and a key that cannot be a column (``_id``) left out."""
    src = tmp_path / "t"
    src.mkdir()
    (src / "a.csv").write_text("text,a.b,we`ird\na red circle,x,y\n")
    (src / "b.jsonl").write_text(json.dumps({"text": "a blue square", "a.b": "z", "_id": "7"}) + "\n")
    pq.write_table(pa.table({"text": ["a green star"], "a.b": ["w"]}), src / "c.parquet")
    s = run(ix, src)
    assert (s.rows, s.errors) == (3, 0)
    names = set(ix.store.schema("texts").names)
    assert {"a_b", "we_ird"} <= names and not {"a.b", "we`ird", "_id"} & names
    assert sorted(table(ix, cols=["a_b"])["a_b"].to_pylist()) == ["w", "x", "z"]
    assert run(ix, src).unchanged == 3  # a later run reads the same table

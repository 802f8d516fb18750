"""``clipdex index texts`` and text searches from the command line: text->text, image->text, long queries against
images (not truncated, and said so), and bad input as one line, a non-zero exit and an untouched index."""
import json

import numpy as np
import pytest

from retrieval.index.directory import open_index
from retrieval.store.base import arrow_to_vectors
from tests.helpers import tree_digest  # the shared "index unchanged" check

LONG_QUERY = " ".join(["a", "red", "circle", "on", "white", "paper", "next", "to", "blue", "square"][i % 10]
                      for i in range(300))


@pytest.fixture(scope="module")
def built(tmp_path_factory, shapes_dir):
    """An index with the drawn shapes (images) and a small text corpus (texts)."""
    from click.testing import CliRunner

    from cli.main import cli

    root = tmp_path_factory.mktemp("textcli")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "notes.txt").write_text("a red circle\n\na blue square\n\n" + LONG_QUERY + "\n")
    with open(corpus / "captions.jsonl", "w") as f:
        for i, t in enumerate(["a green triangle", "a yellow star", "a purple circle", "a red circle"]):
            f.write(json.dumps({"caption": t, "source_id": i}) + "\n")
    ix = root / "ix"
    r = CliRunner()
    res = r.invoke(cli, ["index", "images", str(shapes_dir), "--index", str(ix), "--model", "clipdex-tiny",
                         "--workers", "0"])
    assert res.exit_code == 0, res.output
    res = r.invoke(cli, ["index", "texts", str(corpus / "notes.txt"), "--index", str(ix), "--split", "paragraphs"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("texts: 1 files read (0 unchanged), 3 rows, 3 encoded, 0 reused")
    assert "long texts (chunk): 1 over 75 tokens, 1 chunked, 0 stretched, 0 truncated" in res.stdout
    res = r.invoke(cli, ["index", "texts", str(corpus / "captions.jsonl"), "--index", str(ix),
                         "--text-column", "caption", "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert (s["rows"], s["encoded"], s["reused"]) == (4, 3, 1)  # "a red circle" was in notes.txt
    return root, ix, corpus


def _json_rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_text_to_text_search_finds_the_identical_text_first(built, runner, cli):
    _, ix, _ = built
    res = runner.invoke(cli, ["search", str(ix), "a yellow star", "--table", "texts", "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    hits = _json_rows(res.stdout)
    assert hits[0]["text"] == "a yellow star" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert hits[0]["source_id"] == "1" and hits[0]["chunk"] == 1
    assert res.stderr == ""  # a short query: nothing to say


def test_image_to_text_search_scores_every_text_against_the_image(built, runner, cli, tiny, shapes_dir):
    _, ix, _ = built
    img = shapes_dir / "circle" / "red_0.png"
    res = runner.invoke(cli, ["search", str(ix), "--image", str(img), "--table", "texts", "-k", "7", "--json"])
    assert res.exit_code == 0, res.output
    hits = _json_rows(res.stdout)
    from PIL import Image

    q = tiny.encode_images([Image.open(img)])[0]
    with open_index(ix) as index:
        t = index.store.take("texts", [h["id"] for h in hits], ["vector"])
    vecs, _ = arrow_to_vectors(t.column("vector"), 64)
    np.testing.assert_allclose([h["score"] for h in hits], vecs @ q, atol=1e-5)
    assert len(hits) == 7 and all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:]))


def test_a_300_token_query_against_images_is_pooled_not_truncated_and_says_so(built, runner, cli, tiny):
    _, ix, _ = built
    res = runner.invoke(cli, ["search", str(ix), LONG_QUERY, "-k", "5", "--json"])
    assert res.exit_code == 0, res.output
    assert res.stderr.strip() == "query: 300 tokens, strategy chunk: 5 windows of 75 pooled (chunk pooling)"
    pooled = tiny.encode_long_texts([LONG_QUERY], "chunk").vectors[0]
    truncated = tiny.encode_texts([LONG_QUERY])[0]
    assert float(pooled @ truncated) < 0.9999  # the tail matters
    hits = _json_rows(res.stdout)
    with open_index(ix) as index:
        t = index.store.take("images", [h["id"] for h in hits], ["vector"])
    vecs, _ = arrow_to_vectors(t.column("vector"), 64)
    np.testing.assert_allclose([h["score"] for h in hits], vecs @ pooled, atol=1e-5)


def test_query_strategies_longclip_and_truncate_are_reported(built, runner, cli):
    _, ix, _ = built
    res = runner.invoke(cli, ["search", str(ix), LONG_QUERY, "-k", "1", "--long-text", "longclip"])
    assert res.exit_code == 0 and "query: 300 tokens, strategy longclip: 2 windows of 246 pooled" in res.stderr
    res = runner.invoke(cli, ["search", str(ix), LONG_QUERY, "-k", "1", "--table", "texts", "--long-text", "truncate"])
    assert res.exit_code == 0
    assert "warning: table 'texts' was indexed with --long-text chunk; querying with truncate" in res.stderr
    assert "(strategy 'truncate')" in res.stderr
    assert "query: 300 tokens, strategy truncate: TRUNCATED to 75" in res.stderr


def test_an_up_to_date_corpus_is_skipped(built, runner, cli):
    _, ix, corpus = built
    res = runner.invoke(cli, ["index", "texts", str(corpus / "notes.txt"), "--index", str(ix), "--split",
                              "paragraphs", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["unchanged"] == 1


@pytest.mark.parametrize("case", ["binary", "empty", "no-column", "strategy", "split", "other-strategy"])
def test_bad_input_is_one_line_nonzero_and_leaves_the_index_unchanged(built, runner, cli, case, tmp_path):
    root, ix, corpus = built
    args = {
        "binary": ([str(_write(tmp_path / "photo.txt", b"\x89PNG\r\n\x1a\n\x00\x00"))], "binary file"),
        "empty": ([str(_write(tmp_path / "empty.md", b""))], "every file is empty"),
        "no-column": ([str(corpus / "captions.jsonl")], "has no 'text' field"),
        "strategy": ([str(corpus / "notes.txt"), "--long-text", "stretch"], "unknown long-text strategy 'stretch'"),
        "split": ([str(corpus / "notes.txt"), "--split", "words"], "unknown --split 'words'"),
        "other-strategy": ([str(corpus / "notes.txt"), "--long-text", "truncate"], "built with --long-text chunk"),
    }[case]
    before = tree_digest(ix)
    res = runner.invoke(cli, ["index", "texts", *args[0], "--index", str(ix)])
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ") and args[1] in res.stderr
    assert "Traceback" not in res.output and res.stdout == ""
    assert tree_digest(ix) == before


def test_unknown_query_strategy_is_one_line(built, runner, cli):
    _, ix, _ = built
    res = runner.invoke(cli, ["search", str(ix), "a dog", "--long-text", "bogus"])
    assert res.exit_code == 1 and res.stderr.strip() == (
        "error: unknown long-text strategy 'bogus'; choose one of chunk, longclip, truncate")


def _write(path, data: bytes):
    path.write_bytes(data)
    return path

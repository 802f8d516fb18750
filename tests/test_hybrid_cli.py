"""Words and pictures from the command line (issue 23): ``index images --ocr``, ``search`` in hybrid mode with
``--explain``, query arithmetic, ``eval retrieval --mode`` with CLIP_benchmark output; both backends."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.main import cli
from clipdex.synthetic.words import draw_picture
from indexers import ocr as ocr_module
from retrieval.algorithms.fusion import combine_vectors
from retrieval.index.directory import open_index
from retrieval.query.hybrid import HybridOptions, hybrid_search

pytest.importorskip("rapidocr_onnxruntime")
TINY = "clipdex-tiny"
PICTURES = {  # file -> (shape, colour, lines)
    "a.png": ("circle", "red", ["CITY STORE", "TOTAL 42.17"]),
    "b.png": ("circle", "red", ["CITY STORE", "TOTAL 17.42"]),
    "c.png": ("square", "blue", ["MAIN STREET"]),
    "d.png": ("star", "green", None),
}


def _run(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return r


@pytest.fixture(scope="module", params=["lance", "faiss"])
def receipts(request, tmp_path_factory):
    import random

    root = tmp_path_factory.mktemp(f"receipts-{request.param}")
    (root / "pics").mkdir()
    rng = random.Random(1)
    for name, (shape, color, lines) in PICTURES.items():
        draw_picture(shape, color, lines, rng, 160, px=16)[0].save(root / "pics" / name)
    ix = root / "r.clipdex"
    r = _run("index", "images", root / "pics", "--index", ix, "--model", TINY, "--backend", request.param,
             "--workers", "0", "--ocr", "--json")
    assert r.exit_code == 0, r.output
    return root, ix, json.loads(r.output.strip().splitlines()[-1])


def _hits(output: str) -> list[dict]:
    return [json.loads(line) for line in output.strip().splitlines()]


def test_ocr_rows_are_stored_once_per_picture(receipts):
    root, ix, summary = receipts
    assert summary["ocr"]["read"] == 4 and summary["ocr"]["with_text"] == 3 and summary["ocr"]["errors"] == 0
    with open_index(ix) as opened:
        rows = opened.store.scan("ocr", ["path", "text", "confidence", "boxes", "lines"])
        got = {p.rsplit("/", 1)[-1]: (t, c, json.loads(b), n)
               for batch in rows for p, t, c, b, n in zip(*(batch.column(i).to_pylist() for i in range(5)))}
    text, conf, boxes, lines = got["a.png"]
    assert "42.17" in text and "TOTAL" in text.upper() and 0.5 < conf <= 1 and lines == len(boxes) == 2
    assert len(boxes[0]) == 10 and boxes[0][8] in text  # four corners, the line, its confidence
    assert got["d.png"][0] == "" and got["d.png"][3] == 0  # no text: a row all the same (not read again)
    again = _run("index", "images", root / "pics", "--index", ix, "--ocr", "--json")
    assert again.exit_code == 0 and json.loads(again.output.strip().splitlines()[-1])["ocr"]["read"] == 0


def test_find_a_receipt_by_its_total_and_say_why(receipts):
    root, ix, _ = receipts
    r = _run("search", ix, "total 42.17", "-k", "3", "--explain", "--json")
    assert r.exit_code == 0, r.output
    hits = _hits(r.output)
    first = hits[0]
    assert first["path"].endswith("a.png") and first["mode"] == "hybrid"  # auto: the index ran OCR
    assert {"total", "42", "17", "4217"} <= set(first["matched"]) and first["text_rank"] == 1
    assert "42.17" in first["ocr"] and first["vector_rank"] >= 1
    assert hits[1]["path"].endswith("b.png")  # the look-alike: same words, other order, ranked below
    plain = _hits(_run("search", ix, "total 42.17", "-k", "3", "--mode", "vector", "--json").output)
    assert "mode" not in plain[0] and "matched" not in plain[0]  # vector mode is the old search, unchanged
    street = _hits(_run("search", ix, "main street", "--mode", "text", "--json").output)
    assert [h["path"].rsplit("/", 1)[-1] for h in street] == ["c.png"]
    table = _run("search", ix, "total 42.17", "-k", "2", "--explain")
    assert "matched" in table.output and "total, 42" in table.output


def test_filters_and_min_score_in_hybrid_mode(receipts):
    root, ix, _ = receipts
    hits = _hits(_run("search", ix, "total 42.17", "-k", "2", "--where", "path LIKE '%c.png' OR path LIKE '%d.png'",
                      "--json").output)
    assert sorted(h["path"][-5:] for h in hits) == ["c.png", "d.png"]  # exact-k under the filter, no words needed
    hits = _hits(_run("search", ix, "total 42.17", "-k", "4", "--min-score", "0.99", "--json").output)
    assert all(h["vector_score"] >= 0.99 for h in hits)


def test_query_arithmetic_is_the_weighted_sum(receipts, tiny):
    root, ix, _ = receipts
    with open_index(ix) as opened:
        x = np.stack([tiny.encode_texts(["a red circle"])[0], tiny.encode_texts(["a blue square"])[0]])
        q = combine_vectors(x[:1], [1.0], x[1:], [0.5])
        got = hybrid_search(opened, '"a red circle" - "a blue square:0.5"', k=4, encoder=tiny,
                            options=HybridOptions(mode="vector", explain=True))
        rows = opened.store.take("images", got.column("id").to_pylist(), ["id", "vector"])
        vecs = np.asarray(rows.column("vector").to_pylist(), np.float32)
    np.testing.assert_allclose(got.column("vector_score").to_numpy(), vecs @ q, atol=1e-4)
    r = _run("search", ix, "a red circle", "-", "a blue square:0.5", "-k", "4", "--mode", "vector", "--explain",
             "--json")
    assert [h["id"] for h in _hits(r.output)] == got.column("id").to_pylist()
    r = _run("search", ix, "a red circle", "--subtract", "a blue square:0.5", "-k", "4", "--mode", "vector", "--json")
    assert [h["id"] for h in _hits(r.output)] == got.column("id").to_pylist()


@pytest.mark.parametrize("args, message", [
    (["total", "--weights", "1"], "--weights"),
    (["--image", "IMG", "--mode", "text"], "needs words"),
    (["total", "+"], "ends with an operator"),
    (["total", "--vectors", "Q"], "--vectors"),
])
def test_bad_hybrid_queries_are_one_line(receipts, args, message, tmp_path):
    root, ix, _ = receipts
    args = [str(root / "pics" / "a.png") if a == "IMG" else a for a in args]
    if "Q" in args:
        np.save(tmp_path / "q.npy", np.ones((1, 4), np.float32))
        args = [str(tmp_path / "q.npy") if a == "Q" else a for a in args]
    r = _run("search", ix, *args)
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output


def test_ocr_failures_are_recorded_and_skipped(tmp_path, monkeypatch):
    (tmp_path / "p").mkdir()
    Image.new("RGB", (64, 64), "white").save(tmp_path / "p" / "x.png")
    r = _run("index", "images", tmp_path / "p", "--index", tmp_path / "o.clipdex", "--model", TINY, "--workers", "0")
    assert r.exit_code == 0

    def broken(engine, pixels):
        raise RuntimeError("engine failed")

    monkeypatch.setattr(ocr_module, "read_text", broken)
    with open_index(tmp_path / "o.clipdex", writable=True) as ix:
        first = ocr_module.ocr_images(ix)
        again = ocr_module.ocr_images(ix)
        errors = list(ix.store.scan("errors", ["stage", "reason", "source_table"]))[0].to_pylist()
    assert first.errors == 1 and first.read == 0 and again.known_errors == 1 and again.errors == 0
    assert errors == [{"stage": "ocr", "reason": "RuntimeError: engine failed", "source_table": "ocr"}]
    monkeypatch.undo()
    with open_index(tmp_path / "o.clipdex", writable=True) as ix:
        retried = ocr_module.ocr_images(ix, ocr_module.OcrOptions(retry_errors=True))
        assert retried.read == 1 and ix.store.count("errors") == 0  # the stale error row is gone
        ix.delete("images", [0])
        assert ocr_module.ocr_images(ix).removed == 1  # the picture left: its OCR row goes too


def test_eval_modes_and_clip_benchmark_output(receipts, tmp_path):
    root, ix, _ = receipts
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps(q) + "\n" for q in [
        {"query": "total 42.17", "relevant": ["pics/a.png"], "kind": "ocr"},
        {"query": "main street", "relevant": ["pics/c.png"], "kind": "ocr"},
        {"query": "a green star", "relevant": ["pics/d.png"], "kind": "visual"}]))
    out = {}
    for mode in ("vector", "text", "hybrid"):
        r = _run("eval", "retrieval", ix, queries, "--mode", mode, "--json", "--output", tmp_path / f"{mode}.json")
        assert r.exit_code == 0, r.output
        out[mode] = json.loads(r.output.strip().splitlines()[-1])["summary"]
    assert out["text"]["kinds"]["ocr"]["recall@1"] == 1.0 and out["text"]["kinds"]["visual"]["recall@10"] == 0.0
    assert out["hybrid"]["kinds"]["ocr"]["recall@1"] == 1.0 and out["hybrid"]["kinds"]["visual"]["recall@10"] == 1.0
    record = json.loads((tmp_path / "hybrid.json").read_text())
    assert record["task"] == "zeroshot_retrieval" and record["model"] == TINY and record["dataset"] == "q"
    assert record["metrics"]["image_retrieval_recall@1"] == out["hybrid"]["recall@1"]


@pytest.mark.slow  # the whole demo: 48 drawings, six receipts read by OCR (about 10 s)
def test_demo_finds_a_receipt_by_its_total(tmp_path):
    r = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "demo"), "--model", TINY, "-k", "3"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    block = r.output.split("--explain", 1)[1].splitlines()
    total = r.output.split('"total ', 1)[1].split('"')[0]
    first = block[2].split()
    assert first[0] == "1" and first[2].endswith("receipt_0.png") and total in block[2]  # its total, read by OCR
    assert "receipt_1.png" in block[3]  # the receipt with the same digits the other way round comes next

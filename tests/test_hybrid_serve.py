"""Words and pictures in ``clipdex serve`` (issue 23): the API's mode / weights / explain / query arithmetic, and the
page's "matched words" in Chromium."""
from __future__ import annotations

import random

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from clipdex.synthetic.words import draw_picture
from retrieval.algorithms.fusion import combine_vectors
from retrieval.index.directory import open_index
from tests.serve_helpers import client, live_app
from tests.test_serve_browser import CHROMIUM

pytest.importorskip("fastapi")
pytest.importorskip("rapidocr_onnxruntime")
PICTURES = {"a.png": ("circle", "red", ["CITY STORE", "TOTAL 42.17"]),
            "b.png": ("circle", "red", ["CITY STORE", "TOTAL 17.42"]),
            "c.png": ("square", "blue", ["MAIN STREET"]), "d.png": ("star", "green", None)}


@pytest.fixture(scope="module")
def receipts(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-words")
    (root / "pics").mkdir()
    rng = random.Random(1)
    for name, (shape, color, lines) in PICTURES.items():
        draw_picture(shape, color, lines, rng, 160, px=16)[0].save(root / "pics" / name)
    r = CliRunner().invoke(cli, ["index", "images", str(root / "pics"), "--index", str(root / "r.clipdex"), "--model",
                                 "clipdex-tiny", "--workers", "0", "--ocr"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return root


@pytest.fixture(scope="module")
def api(receipts):
    with client(receipts / "r.clipdex", receipts / "cache") as c:
        yield c


def test_api_finds_the_receipt_by_its_total_and_says_why(api):
    r = api.post("/api/search", json={"text": "total 42.17", "k": 3, "explain": True})
    assert r.status_code == 200, r.text
    first = r.json()["results"][0]
    assert first["path"].endswith("a.png") and first["mode"] == "hybrid" and first["text_rank"] == 1
    assert {"total", "42", "17"} <= set(first["matched"]) and "42.17" in first["ocr"]
    words = api.post("/api/search", json={"text": "main street", "mode": "text"}).json()["results"]
    assert [w["path"][-5:] for w in words] == ["c.png"]
    plain = api.post("/api/search", json={"text": "total 42.17", "mode": "vector"}).json()["results"][0]
    assert "matched" not in plain and "mode" not in plain  # vector mode: the search it always was


def test_api_query_arithmetic_and_weights(api, receipts, tiny):
    x = tiny.encode_texts(["a red circle", "a blue square"])
    q = combine_vectors(x[:1], [1.0], x[1:], [0.5])
    r = api.post("/api/search", json={"text": '"a red circle" - "a blue square:0.5"', "k": 4, "mode": "vector",
                                      "explain": True})
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    with open_index(receipts / "r.clipdex") as ix:
        vecs = np.asarray(ix.store.take("images", [h["id"] for h in hits], ["id", "vector"]).column("vector")
                          .to_pylist(), np.float32)
    np.testing.assert_allclose([h["vector_score"] for h in hits], vecs @ q, atol=1e-4)
    only_words = api.post("/api/search", json={"text": "main street", "mode": "hybrid", "weights": [0, 1], "k": 1})
    assert only_words.json()["results"][0]["path"].endswith("c.png")


@pytest.mark.parametrize("body", [{"text": "x", "mode": "fuzzy"}, {"text": "x", "fusion": "max"},
                                  {"text": "x", "weights": [1]}, {"text": "x", "weights": [1, -1]},
                                  {"text": "x", "mode": "text", "table": "videos"},
                                  {"text": '"a" + "b:nan"'}, {"text": '"a" - "a"'}])
def test_api_bad_hybrid_requests_are_4xx_json(api, body):
    r = api.post("/api/search", json=body)
    assert 400 <= r.status_code < 500 and "error" in r.json(), r.text


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_the_page_marks_the_matched_words(receipts, tmp_path):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with live_app([str(receipts / "r.clipdex")], tmp_path / "cache") as base:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/")
            page.get_by_label("Search text").fill("total 42.17")
            page.keyboard.press("Enter")
            page.wait_for_selector("#results li.result .matched")
            first = page.locator("#results li.result").first
            assert "a.png" in first.inner_text()
            marks = first.locator(".words mark").all_inner_texts()
            assert {"total", "42", "17"} <= set(marks)
            ocr_marks = first.locator(".ocr mark").all_inner_texts()
            assert "42" in ocr_marks and "17" in ocr_marks and "TOTAL" in [m.upper() for m in ocr_marks]
            page.screenshot(path=str(tmp_path / "matched-words.png"))
            page.select_option("#mode", "text")
            page.locator("#go").click()
            page.wait_for_function("new URLSearchParams(location.search).get('mode') === 'text'")
            page.wait_for_function("document.querySelectorAll('#results li.result').length === 2")
            assert not page.locator("#results li.result", has_text="d.png").count()  # no words: not a text hit
            browser.close()
    assert not errors, errors

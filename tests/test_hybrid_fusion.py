"""Complete-match fusion (issue 23): the default fusion of hybrid search puts the keyword hits that carry every
query word first when only some hits do. Pure functions, then a small words-in-the-picture set where plain RRF
ranks a look-alike first and hybrid must be at least as good as the best single mode on every query kind."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.main import cli
from clipdex.synthetic.words import make_words_set
from indexers import ocr as ocr_module
from retrieval.algorithms.fusion import complete_match_fusion, reciprocal_rank_fusion
from retrieval.algorithms.words import complete_matches, document_terms, query_words

# -- pure functions ---------------------------------------------------------------------------------------------


def test_query_words_hold_the_whole_word_and_its_joins():
    assert query_words("total 42.17") == [{"total", "total4217"}, {"4217", "total4217"}]
    assert query_words("XV-8807") == [{"xv8807"}]
    assert query_words("  ... ") == []


def test_complete_matches_need_every_word_in_its_order():
    docs = [document_terms(["CITY STORE", "ITEMS 3", "TOTAL 42.17"]), document_terms(["TOTAL 17.42"]),
            document_terms(["TOTAL42.17"]), document_terms(["42.17"]), document_terms(["CODE", "XV-8078"])]
    assert complete_matches(query_words("total 42.17"), docs) == [True, False, True, False, False]
    assert complete_matches(query_words("main street"), [document_terms(["MAINSTREET.png"])]) == [True]
    assert complete_matches([], docs[:1]) == [False]


def test_complete_match_fusion_lifts_complete_hits_and_keeps_rrf_order():
    vec = np.array([7, 5, 9, 3])  # a picture search that cannot read: the look-alike 7 first
    kw = np.array([3, 7, 8])  # 3 carries every query word; 7 and 8 some
    ids, s = complete_match_fusion(vec, kw, np.array([True, False, False]))
    assert ids[0] == 3  # plain RRF puts 7 first (ranks 1 and 2 beat 4 and 1)
    assert reciprocal_rank_fusion([vec, kw])[0][0] == 7
    rest, rest_s = reciprocal_rank_fusion([vec, kw])
    assert ids[1:].tolist() == [d for d in rest.tolist() if d != 3]  # the others in RRF order
    assert s.tolist() == sorted(s.tolist(), reverse=True)
    bonus = 2 / 61  # the largest RRF score a row can have, for weights 1, 1
    assert s[0] == pytest.approx(1 / 64 + 1 / 61 + bonus, rel=1e-6)
    np.testing.assert_allclose(s[1:], rest_s[rest != 3], rtol=1e-6)


@pytest.mark.parametrize("complete", [[True, True, True], [False, False, False]])
def test_complete_match_fusion_is_rrf_when_coverage_does_not_tell_hits_apart(complete):
    vec, kw = np.array([7, 5, 9, 3]), np.array([3, 7, 8])
    ids, s = complete_match_fusion(vec, kw, np.array(complete), weights=[1.0, 2.0], k=10)
    want_ids, want_s = reciprocal_rank_fusion([vec, kw], [1.0, 2.0], 10)
    assert ids.tolist() == want_ids.tolist()
    np.testing.assert_allclose(s, want_s)


def test_complete_match_fusion_with_no_keyword_weight_is_the_vector_ranking():
    vec, kw = np.array([7, 5, 9, 3]), np.array([3, 7, 8])
    ids, _ = complete_match_fusion(vec, kw, np.array([True, False, False]), weights=[1.0, 0.0])
    assert ids.tolist()[:4] == [7, 5, 9, 3]
    with pytest.raises(ValueError):
        complete_match_fusion(vec, kw, np.array([True]))


# -- a small words-in-the-picture set, both backends ------------------------------------------------------------


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module", params=["lance", "faiss"])
def words_set(request, tmp_path_factory):
    """make_words_set's pictures (6 queries a kind) indexed with clipdex-tiny and --ocr, where OCR reads exactly the
    words drawn (the fusion is under test here, not the reader: tests/test_hybrid_cli.py reads for real)."""
    root = tmp_path_factory.mktemp(f"words-{request.param}")
    data = make_words_set(root / "set", n_queries=6, size=96, seed=3)
    drawn = {}
    for it in data["items"]:
        pixels = np.asarray(Image.open(root / "set" / it["path"]).convert("RGB"))
        drawn[hashlib.sha1(pixels.tobytes()).hexdigest()] = "\n".join(it["lines"])
    mp = pytest.MonkeyPatch()
    mp.setattr(ocr_module, "ocr_engine", lambda options=None: None)
    mp.setattr(ocr_module, "read_text", lambda engine, px: (drawn[hashlib.sha1(px.tobytes()).hexdigest()], 1.0, []))
    try:
        r = _run("index", "images", data["manifest"], "--index", root / "w.clipdex", "--model", "clipdex-tiny",
                 "--backend", request.param, "--workers", "0", "--ocr", "--json")
    finally:
        mp.undo()
    assert r.exit_code == 0, r.output
    return root / "w.clipdex", data["queries_path"]


def _ndcg(ix, queries, *args) -> dict:
    r = _run("eval", "retrieval", ix, queries, *args, "--json")
    assert r.exit_code == 0, r.output
    kinds = json.loads(r.output.strip().splitlines()[-1])["summary"]["kinds"]
    return {kind: m["ndcg@10"] for kind, m in kinds.items()}


@pytest.mark.slow  # indexes 58 pictures with clipdex-tiny per backend (about 5-12 s)
def test_hybrid_is_at_least_the_best_single_mode_on_every_kind(words_set):
    ix, queries = words_set
    vector, text = _ndcg(ix, queries, "--mode", "vector"), _ndcg(ix, queries, "--mode", "text")
    hybrid = _ndcg(ix, queries, "--mode", "hybrid")
    assert text["ocr"] == 1.0 and vector["ocr"] < 0.5  # the set: only reading finds these
    for kind in ("ocr", "meta", "visual", "mixed"):
        assert hybrid[kind] >= max(vector[kind], text[kind]) - 1e-9, (kind, vector, text, hybrid)
    # plain RRF lets a look-alike that shares most words outrank the answer: what the default fusion fixes
    assert _ndcg(ix, queries, "--mode", "hybrid", "--fusion", "rrf")["ocr"] < text["ocr"]

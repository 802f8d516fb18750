"""Hybrid search (issue 23): fusion and query-arithmetic math, the tokeniser, and the full-text index with keyword,
hybrid, filtered and explained searches on both backends (raw vectors: no model, fast)."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.algorithms.fusion import (
    combine_vectors,
    rank_positions,
    reciprocal_rank_fusion,
    weighted_score_fusion,
)
from retrieval.algorithms.words import matched_terms, query_terms, terms
from retrieval.errors import InvalidInput
from retrieval.index.directory import create_index
from retrieval.index.fulltext import full_text
from retrieval.query.arithmetic import parse_parts, parse_query
from retrieval.query.hybrid import HybridOptions, hybrid_search

# -- pure functions ---------------------------------------------------------------------------------------------


def test_rrf_sums_reciprocal_ranks_with_weights():
    ids, s = reciprocal_rank_fusion([np.array([10, 20, 30]), np.array([30, 40])], weights=[1.0, 2.0], k=60)
    want = {10: 1 / 61, 20: 1 / 62, 30: 1 / 63 + 2 / 61, 40: 2 / 62}
    assert ids.tolist() == sorted(want, key=lambda d: -want[d])
    np.testing.assert_allclose(s, [want[d] for d in ids.tolist()], rtol=1e-6)
    # ties broken by the first ranking's order
    ids, _ = reciprocal_rank_fusion([np.array([1, 2]), np.array([2, 1])])
    assert ids.tolist() == [1, 2]
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([np.array([1])], weights=[-1.0])


def test_weighted_score_fusion_scales_each_list():
    ids, s = weighted_score_fusion([(np.array([1, 2, 3]), np.array([0.9, 0.5, 0.1])),
                                    (np.array([3, 4]), np.array([12.0, 2.0]))], weights=[1.0, 1.0])
    got = dict(zip(ids.tolist(), s.tolist()))
    assert got == pytest.approx({1: 1.0, 2: 0.5, 3: 1.0, 4: 0.0})
    assert ids.tolist()[:2] == [1, 3]  # tie 1.0: the first list's order


def test_combine_vectors_and_rank_positions():
    e = np.eye(3, dtype=np.float32)
    q = combine_vectors(e[[0, 1]], [1.0, 0.5], e[[2]] * 3, [1.0])  # inputs are normalised first
    np.testing.assert_allclose(q, np.array([1.0, 0.5, -1.0]) / 1.5, rtol=1e-6)
    with pytest.raises(ValueError):
        combine_vectors(e[[0]], [1.0], e[[0]], [1.0])  # cancels out
    assert rank_positions(np.array([5, 7, 9]), np.array([9, 1, 5])).tolist() == [3, 0, 1]


def test_terms_split_paths_numbers_and_joined_words():
    assert {"invoice", "2024", "png", "receipts"} <= set(terms("/home/u/Receipts/invoice_2024.png"))
    t = terms("TOTAL42.17")
    assert {"total42", "total", "42", "17", "total4217"} <= set(t)
    assert "4217" in query_terms("total 42.17") and "1742" not in set(terms("TOTAL 42.17"))
    assert "mainstreet" in query_terms("Main Street")  # OCR that dropped the space still matches
    assert matched_terms(query_terms("main street"), " ".join(terms("MAINSTREET12"))) == ["mainstreet"]


def test_query_arithmetic_parsing():
    t = parse_query('"beach" + "sunset:0.5" - "people"')
    assert [(x.value, x.weight, x.sign) for x in t] == [("beach", 1.0, 1), ("sunset", 0.5, 1), ("people", 1.0, -1)]
    assert parse_query("t-shirt - red") is None and parse_query('a "quoted" word') is None
    t = parse_parts(["beach", "+", "sunset:0.5", "-", "people"])
    assert [(x.value, x.weight, x.sign) for x in t] == [("beach", 1.0, 1), ("sunset", 0.5, 1), ("people", 1.0, -1)]
    assert parse_parts(["a dog on a beach"]) is None
    for bad in (["beach", "+"], ["beach", "sunset"], ["-", "beach"], ["beach", "+", "sun:-1"]):
        with pytest.raises(InvalidInput):
            parse_parts(bad)


# -- the full-text index and hybrid search, both backends ---------------------------------------------------------

PATHS = ["/photos/receipts/invoice_2024.png", "/photos/cat.png", "/photos/dog.png", "/photos/main_street.jpg",
         "/photos/x.png", "/photos/y.png", "/photos/z.png", "/photos/w.png"]
CAPTIONS = [None, "a cat on a mat", "receipt TOTAL 42.17", None, "receipt total 17.42", None, "a bird", "total"]
PLACES = ["home", "home", "work", "town", "work", "town", "home", "work"]


@pytest.fixture(params=["lance", "faiss"])
def words_index(request, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(PATHS), 8)).astype(np.float32)
    ix = create_index(tmp_path / f"w-{request.param}.clipdex", dim=8, model="none", backend=request.param)
    ix.ensure_table("images")
    ix.add_vectors("images", x, {"path": PATHS, "caption": CAPTIONS, "place": PLACES})
    yield ix, x / np.linalg.norm(x, axis=1, keepdims=True)
    ix.close()


def _ids(table):
    return table.column("id").to_pylist()


def test_keyword_mode_finds_words_in_names_captions_and_metadata(words_index):
    ix, x = words_index
    text = HybridOptions(mode="text")
    assert _ids(hybrid_search(ix, words="invoice 2024", k=3, options=text)) == [0]  # file name, split on _
    assert _ids(hybrid_search(ix, words="receipts", k=3, options=text))[0] == 0  # a folder name
    assert _ids(hybrid_search(ix, words="total 42.17", k=2, options=text)) == [2, 4]  # 42.17 before 17.42
    assert _ids(hybrid_search(ix, words="main street", k=3, options=text)) == [3]
    assert sorted(_ids(hybrid_search(ix, words="town", k=5, options=text))) == [3, 5]  # a metadata column
    assert len(hybrid_search(ix, words="zebra", k=5, options=text)) == 0


def test_full_text_follows_adds_and_deletes(words_index):
    ix, x = words_index
    ft = full_text(ix, "images")
    assert ft.sync() == {"added": len(PATHS), "changed": 0, "removed": 0}  # built by its first use
    text = HybridOptions(mode="text")
    assert _ids(hybrid_search(ix, words="cat", k=3, options=text)) == [1]
    new = ix.add_vectors("images", x[:1], {"path": ["/photos/new/cat_food.png"]})
    assert sorted(_ids(hybrid_search(ix, words="cat", k=3, options=text))) == [1, int(new[0])]
    ix.delete("images", [1])
    assert _ids(hybrid_search(ix, words="cat", k=3, options=text)) == [int(new[0])]
    assert ft.sync() == {"added": 0, "changed": 0, "removed": 0}  # kept in step by each query
    assert set(ft.engine.fingerprints()) == set(range(len(PATHS))) - {1} | {int(new[0])}


def test_hybrid_fuses_and_explains(words_index):
    ix, x = words_index
    q = x[1]  # the cat picture's own vector: vector-only ranks it first; the words point at the receipts
    vec = hybrid_search(ix, vectors=q, words="total 42.17", k=3, options=HybridOptions(mode="vector"))
    hyb = hybrid_search(ix, vectors=q, words="total 42.17", k=4, options=HybridOptions(mode="hybrid", explain=True))
    assert _ids(vec)[0] == 1
    # every row is a vector candidate here, so the three keyword hits lead, then the best picture
    assert _ids(hyb)[0] == 2 and set(_ids(hyb)[:3]) == {2, 4, 7} and _ids(hyb)[3] == 1
    row = {r["id"]: r for r in hyb.to_pylist()}
    assert row[2]["matched"] == ["total", "42", "17", "4217", "total4217"][:len(row[2]["matched"])]
    assert {"total", "42", "17"} <= set(row[2]["matched"]) and row[2]["text_rank"] == 1
    assert row[1]["vector_rank"] == 1 and row[1]["text_rank"] == 0 and row[1]["matched"] == []
    assert row[1]["vector_score"] == pytest.approx(1.0, abs=1e-5)
    assert row[2]["vector_score"] == pytest.approx(float(x[2] @ q), abs=1e-5)  # computed for keyword hits too
    scores = hyb.column("score").to_pylist()
    assert scores == sorted(scores, reverse=True)
    # keyword weight 0: the vector ranking alone decides
    only_vec = hybrid_search(ix, vectors=q, words="total 42.17", k=3, options=HybridOptions("hybrid", (1.0, 0.0)))
    assert _ids(only_vec) == _ids(vec)


def test_where_and_min_score_keep_their_meaning(words_index):
    ix, x = words_index
    q = x[2]
    # filtered keyword results stay exact-k: 'total' matches 4 rows, 2 of them at work
    text = hybrid_search(ix, vectors=q, words="total", k=5, where="place = 'work'", options=HybridOptions("text"))
    assert sorted(_ids(text)) == [2, 4, 7]
    hyb = hybrid_search(ix, vectors=q, words="total", k=3, where="place = 'home'", options=HybridOptions("hybrid"))
    assert sorted(_ids(hyb)) == [0, 1, 6]  # exactly k: every home row, whatever its words
    # min_score is the least cosine, in every mode
    cos = x @ q
    for mode in ("vector", "text", "hybrid"):
        got = hybrid_search(ix, vectors=q, words="total receipt", k=8, min_score=0.2, options=HybridOptions(mode))
        kept = set(_ids(got))
        assert kept and all(cos[i] >= 0.2 - 1e-6 for i in kept), mode
        if mode == "vector":
            assert kept == {i for i in range(len(cos)) if cos[i] >= 0.2}


def test_bad_options_are_refused(words_index):
    ix, x = words_index
    for opts in (HybridOptions(mode="fuzzy"), HybridOptions(fusion="max"), HybridOptions(weights=(0.0, 0.0)),
                 HybridOptions(weights=(1.0, float("nan")))):
        with pytest.raises(InvalidInput):
            hybrid_search(ix, vectors=x[0], words="cat", options=opts)
    with pytest.raises(InvalidInput, match="needs words"):
        hybrid_search(ix, vectors=x[0], options=HybridOptions(mode="text"))


@pytest.mark.parametrize("backend", ["lance", "faiss"])
def test_filtered_keyword_search_digs_past_the_first_candidates(tmp_path, backend):
    # 120 short 'total' rows at home rank above 3 longer ones at work: the engine is asked again, deeper
    n = 123
    x = np.random.default_rng(1).normal(size=(n, 8)).astype(np.float32)
    captions = ["total"] * 120 + ["total of a long receipt with many other words on it"] * 3
    with create_index(tmp_path / f"d-{backend}.clipdex", dim=8, model="none", backend=backend) as ix:
        ix.ensure_table("images")
        ix.add_vectors("images", x, {"path": [f"/p/{i}.png" for i in range(n)], "caption": captions,
                                     "place": ["home"] * 120 + ["work"] * 3})
        got = hybrid_search(ix, words="total", k=3, where="place = 'work'", options=HybridOptions("text"))
        assert sorted(_ids(got)) == [120, 121, 122]
        first = hybrid_search(ix, words="total", k=3, options=HybridOptions("text"))
        assert all(i < 120 for i in _ids(first))  # the work rows do rank below the first candidates


def test_a_keyword_hit_past_the_vector_candidates_still_counts_its_picture(words_index):
    ix, x = words_index
    q = x[0]
    cos = x @ q
    outside = [i for i in np.argsort(-cos)[2:] if i == 3]  # main_street.jpg: not among the 2 vector candidates
    assert outside, "fixture: row 3 must rank below the top 2"
    got = hybrid_search(ix, vectors=q, words="main street", k=1, options=HybridOptions("hybrid", candidates=2))
    # rank 1 in one ranking each: its words, plus its picture ranked below the candidates, beat the best picture
    # whose words do not match (a tie that went to the vector ranking's row before)
    assert _ids(got) == [3]

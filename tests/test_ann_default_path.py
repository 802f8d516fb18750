"""Issue 11's default path: the Lance backend chooses its ANN structure by measurement (a FAISS index beside the
table when that measures faster), tunes on text-like queries when it has any (captions, ``--queries``, served
queries kept in the index's cache), never keeps an index that is slower than exact search or short of its target,
and the realistic generator is harder for text-like queries than for image-like ones."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from clipdex.synthetic.ann_realistic import corpus_stats, make_realistic_corpus
from clipdex.synthetic.embeddings import clustered, normalize
from retrieval.ann import tuning
from retrieval.ann.exact import exact_search, recall_at_k
from retrieval.index import optimize
from retrieval.index.directory import create_index, open_index
from retrieval.index.optimize import OptimizeOptions, optimize_table
from retrieval.index.query_cache import load_queries, remember_queries
from tests.helpers import brute_force

D = 16
N = 3000


def lance_index(tmp_path, n=N, seed=3):
    xb = clustered(n, D, seed=seed)
    ix = create_index(tmp_path / "ix", dim=D, model="none", backend="lance")
    ix.add_vectors("images", xb)
    return ix, xb


def near(xb, q, seed, noise=0.3):
    """Queries (q, D) near rows of xb: a held-out set of one kind (tuning on some generalises to the others)."""
    rng = np.random.default_rng(seed)
    return normalize(xb[rng.choice(len(xb), q, replace=False)] + noise * normalize(rng.standard_normal((q, D))))


def test_lance_measures_candidates_and_keeps_a_faiss_index_beside_the_table(tmp_path):
    ix, xb = lance_index(tmp_path)
    options = OptimizeOptions(recall=0.9, exact_below=0, n_queries=200, sample_size=N, queries=near(xb, 200, 1))
    record = optimize_table(ix, "images", options)
    assert record["query_kind"] == "given" and record["n_queries"] == 200
    assert record["engine"] == "faiss" and record["factory"] and record["met"]
    measured = [c for c in record["candidates"] if "skipped" not in c]
    assert len(measured) >= 2 and all(0 <= c["recall_at_10"] <= 1 for c in measured)
    chosen = max((c for c in measured if c["met"]), key=lambda c: c["qps"])
    assert chosen["kind"] == record["kind"]  # the fastest candidate meeting the target is the one built
    assert (tmp_path / "ix" / "lance" / "_ann" / "images.faiss").is_file()
    ix.close()
    ix = open_index(tmp_path / "ix")  # a new process: the sidecar and its tuned knobs come back
    info = ix.store.ann_info("images")
    assert info["factory"] == record["factory"] and info["params"] == record["params"]
    xq = near(xb, 100, 9)
    _, I = ix.search_vectors("images", xq, 10)
    _, Ir = brute_force(xq, xb, 10)
    assert recall_at_k(I, Ir, 10) >= 0.85
    _, Iw = ix.search_vectors("images", xq, 5, where="id < 100")  # a filter goes to Lance: exact
    _, Iwr = brute_force(xq, xb[:100], 5)
    assert (Iw == Iwr).all()
    ix.close()


def test_an_import_reaching_the_threshold_builds_by_measurement(tmp_path, monkeypatch):
    import indexers.common as common

    monkeypatch.setattr(common, "DEFAULT_EXACT_BELOW", 1000)
    ix, xb = lance_index(tmp_path)
    tuning_seen = {}
    real = optimize.optimize_table

    def spy(index, table, options, **kwargs):
        tuning_seen.update(queries_kind=options.queries_kind)
        return real(index, table, options, **kwargs)

    monkeypatch.setattr(common, "optimize_table", spy)
    record = common.refresh_search(ix, "images")
    assert "candidates" in record and record["kind"] != "flat" and tuning_seen["queries_kind"] == "given"
    before = ix.store.ann_info("images")["built_rows"]
    fresh = clustered(20, D, seed=11)
    new_ids = ix.add_vectors("images", fresh)
    common.refresh_search(ix, "images")  # the next import folds its rows in, nothing is measured again
    info = ix.store.ann_info("images")
    assert info["built_rows"] == before + 20 and info["pending_rows"] == 0 and info["candidates"]
    _, I = ix.search_vectors("images", fresh, 1)
    assert (I[:, 0] == new_ids).all()
    ix.close()


def test_an_index_slower_than_exact_search_is_dropped_and_the_record_says_so(tmp_path, monkeypatch):
    ix, xb = lance_index(tmp_path)
    monkeypatch.setattr(optimize, "slower_than_exact", lambda *a, **k: True)
    monkeypatch.setattr(optimize, "SPEED_CHECK_ROWS", 0)
    record = optimize_table(ix, "images", OptimizeOptions(recall=0.9, exact_below=0, n_queries=60, sample_size=N))
    assert record["kind"] == "flat" and "exact search" in record["note"] and "slower" in record["note"]
    assert "recall_at_10" not in record  # no recall is claimed for an index that is not there
    assert not (tmp_path / "ix" / "lance" / "_ann" / "images.json").exists()
    xq = xb[:5]
    _, I = ix.search_vectors("images", xq, 3)
    assert (I == brute_force(xq, xb, 3)[1]).all()
    ix.close()
    res = CliRunner().invoke(cli, ["info", str(tmp_path / "ix")])
    assert res.exit_code == 0 and "slower than exact search" in res.output


def test_tuning_uses_cached_queries_and_says_which(tmp_path):
    ix, xb = lance_index(tmp_path)
    noise = normalize(np.random.default_rng(2).standard_normal((80, D)))
    text_like = normalize(clustered(80, D, seed=21) + 0.6 * noise)
    np.save(tmp_path / "q.npy", text_like)
    ix.close()
    res = CliRunner().invoke(cli, ["optimize", str(tmp_path / "ix"), "--queries", str(tmp_path / "q.npy"),
                                   "--exact-below", "0", "--recall", "0.9", "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert record["query_kind"] == "given" and record["n_queries"] == 80
    cached, kind = load_queries(tmp_path / "ix")
    assert kind == "given" and np.allclose(cached, text_like)
    # the recorded recall is what these queries get against brute force
    ix = open_index(tmp_path / "ix")
    _, I = ix.search_vectors("images", text_like, 10)
    _, Ir = exact_search(text_like, [(np.arange(N), xb)], 10)
    assert abs(recall_at_k(I, Ir, 10) - record["recall_at_10"]) <= 5.01e-5  # recorded to 4 decimals
    ix.close()
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, D + 1), np.float32))
    res = CliRunner().invoke(cli, ["optimize", str(tmp_path / "ix"), "--queries", str(bad)])
    assert res.exit_code == 1 and res.output.strip().startswith("error: --queries")
    assert len(res.output.splitlines()) == 1


def test_the_query_cache_keeps_the_newest_and_an_explicit_set_outranks_served_ones(tmp_path):
    a, b = np.ones((3, 4), np.float32), np.full((2, 4), 2, np.float32)
    assert remember_queries(tmp_path, a, "served") == 3
    assert remember_queries(tmp_path, b, "served", limit=4) == 4
    x, kind = load_queries(tmp_path)
    assert kind == "served" and x.shape == (4, 4) and (x[-2:] == 2).all() and (x[:2] == 1).all()
    remember_queries(tmp_path, b, "given")  # replaces a sample of served queries
    x, kind = load_queries(tmp_path)
    assert kind == "given" and x.shape == (2, 4)
    remember_queries(tmp_path, a, "served")  # served queries join a given set, which keeps its name
    assert load_queries(tmp_path)[1] == "given" and len(load_queries(tmp_path)[0]) == 5


def test_info_warns_when_recall_was_measured_on_image_like_queries(tmp_path):
    ix, _ = lance_index(tmp_path)
    record = optimize_table(ix, "images", OptimizeOptions(recall=0.9, exact_below=0, n_queries=60, sample_size=N))
    assert record["query_kind"] == "image"
    # image-like stand-ins: half the misses
    assert record["target"] == 0.9 and record["tuned_to"] == pytest.approx(0.95)
    assert not record["met"] or record["recall_at_10"] >= 0.95
    ix.close()
    res = CliRunner().invoke(cli, ["info", str(tmp_path / "ix")])
    assert "image-like queries" in res.output and "--queries" in res.output
    assert "tuned to 0.95" in res.output and "stand in for users' ones" in res.output


def test_stand_in_queries_are_tuned_stricter_than_users_own():
    """Queries drawn from the table stand in for users' ones and miss less than they will: image-like ones may have
    half the misses, captions three quarters; users' own (given, served) get the target itself."""
    assert tuning.tuning_target(0.95, "image") == pytest.approx(0.975)
    assert tuning.tuning_target(0.95, "text") == pytest.approx(0.9625)
    assert tuning.tuning_target(0.95, "given") == tuning.tuning_target(0.95, "served") == 0.95
    assert tuning.tuning_target(1.0, "image") == 1.0
    for kind in ("image", "text", "given", "served", "unknown"):
        for target in (0.5, 0.9, 0.99):
            assert target <= tuning.tuning_target(target, kind) <= 1.0


def test_tuning_on_image_like_queries_reaches_the_stricter_target_and_text_queries_benefit(tmp_path):
    """On the realistic corpus, tuning on image-like stand-ins to the stricter target carries text-like queries (which
    the tuning never saw) further than tuning to the plain target does."""
    c = make_realistic_corpus(30_000, 64, n_queries=300, seed=4, block_size=8192)
    x = np.concatenate(list(c.blocks()))
    ix = create_index(tmp_path / "ix", dim=64, model="none", backend="faiss")
    ix.add_vectors("images", x)
    _, gt = exact_search(c.queries, [(np.arange(len(x)), x)], 10)
    got = {}
    for label, share in (("plain", 1.0), ("stricter", 0.5)):
        old = dict(tuning.STAND_IN_MISS_SHARE)
        tuning.STAND_IN_MISS_SHARE["image"] = share
        try:
            options = OptimizeOptions(recall=0.9, exact_below=0, n_queries=300, kind="ivf_flat", rebuild=True)
            record = optimize_table(ix, "images", options)
        finally:
            tuning.STAND_IN_MISS_SHARE.update(old)
        assert record["query_kind"] == "image" and record["met"], record
        assert record["recall_at_10"] >= record["tuned_to"] - 0.02
        got[label] = (record["params"]["nprobe"], recall_at_k(ix.search_vectors("images", c.queries, 10)[1], gt, 10))
    assert got["stricter"][0] > got["plain"][0] and got["stricter"][1] > got["plain"][1], got
    ix.close()


def test_realistic_corpus_is_clip_like_and_harder_for_text_than_for_images():
    import faiss

    c = make_realistic_corpus(40_000, 128, n_queries=300, seed=1, block_size=8192)
    x = np.concatenate(list(c.blocks()))
    again = c.block(2)  # any block regenerates alone, identically
    assert np.array_equal(again, x[2 * 8192:3 * 8192])
    stats = corpus_stats(x, c.queries)
    assert 0.4 <= stats["image_image_cos"] <= 0.8 and stats["text_image_cos"] < stats["best_text_image_cos"] < 0.7
    assert 0.5 <= stats["gap"] <= 1.2
    x_img, caps = c.block_with_captions(0)
    assert float((x_img * caps).sum(1).mean()) > float((x_img @ caps[:500].T).mean()) + 0.05  # captions match
    ivf = faiss.index_factory(128, "IVF128,Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(x[:20_000])
    ivf.add(x)
    ivf.nprobe = 8
    qi = c.image_like_queries(300)
    got = {}
    for name, q in (("text", c.queries), ("image", qi)):
        _, gt = exact_search(q, [(np.arange(len(x)), x)], 10)
        got[name] = recall_at_k(ivf.search(q, 10)[1], gt, 10)
    assert got["text"] < got["image"] - 0.05, got  # the modality gap makes probing harder

"""Issue 21's build at small scale: ``optimize`` holds a bounded block in memory whatever the batch of held-out
queries and the refinement depth tuning walks, tuning a full-size build starts from the setting measured on the
sample (the widest setting is not measured when the hint meets the target), and an ``optimize`` that changes
nothing keeps the tuning it has instead of measuring again."""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

import indexers.common as common
from cli.main import cli
from clipdex.synthetic.ann_realistic import make_realistic_corpus
from clipdex.synthetic.embeddings import make_clip_retrieval_dir
from retrieval.ann.exact import exact_search
from retrieval.ann.grid_tuning import tune_search_params
from retrieval.ann.plan import DISK_KIND
from retrieval.ann.tuning import HeldOut, scaled_hint, tune
from retrieval.index.directory import create_index
from retrieval.index.optimize import OptimizeOptions, optimize_table

VALUES = [1, 2, 4, 8, 16, 32, 64, 128]


def _search_reaching(at: dict[int, int], gt: np.ndarray, calls: list, cost=(2e-5, 1e-7), sizes: list | None = None):
    """A search whose recall grows with nprobe: at nprobe p (and k_factor f) it finds at[f]-or-more of the truth
    when p >= that chain's threshold, fewer otherwise; every call recorded (and its query count in ``sizes``). It
    takes ``cost`` = (a, b) seconds per query and (a p + b f): the probe's cost dominates by default."""

    def search(xq, k, params):
        calls.append(dict(params))
        if sizes is not None:
            sizes.append(len(xq))
        time.sleep(len(xq) * (cost[0] * params["nprobe"] + cost[1] * params.get("k_factor", 0)))
        need = at.get(params.get("k_factor", 0), at.get(0, 10**9))
        I = gt.copy()
        if params["nprobe"] < need:
            I[:, k // 2:] = -1  # half of the neighbours missed
        return I

    return search


def test_tuning_from_a_hint_finds_the_same_setting_without_measuring_the_widest():
    gt = np.arange(50 * 10).reshape(50, 10)
    xq = np.zeros((50, 4), np.float32)
    for hint, searches in ((16, 2), (4, 3), (64, 5), (32, 3)):  # at, below and above the answer: a search at the
        calls: list = []  # hint, then at doubling distances from it, then a bisection of what is left
        t = tune_search_params(_search_reaching({0: 16}, gt, calls), xq, gt, 10, 0.95, {"nprobe": VALUES},
                               start={"nprobe": hint})
        assert t.met and t.params == {"nprobe": 16} and len(calls) == searches, calls
        assert {"nprobe": 128} not in calls or hint == 4  # a hint that misses the target looks above it only
        if hint != 4:
            assert calls[0] == {"nprobe": hint}
    calls = []
    plain = tune_search_params(_search_reaching({0: 16}, gt, calls), xq, gt, 10, 0.95, {"nprobe": VALUES})
    assert plain.params == {"nprobe": 16} and calls[0] == {"nprobe": 128}  # without one the widest comes first


def test_a_setting_measured_before_is_not_searched_again():
    gt = np.arange(50 * 10).reshape(50, 10)
    xq = np.zeros((50, 4), np.float32)
    calls: list = []
    known: dict = {}
    first = tune_search_params(_search_reaching({0: 16}, gt, calls), xq, gt, 10, 0.95, {"nprobe": VALUES[:4]},
                               known=known)  # the narrowed grid falls short...
    assert not first.met and len(calls) == len(known) > 0
    measured = list(calls)
    whole = tune_search_params(_search_reaching({0: 16}, gt, calls), xq, gt, 10, 0.95, {"nprobe": VALUES},
                               known=known)  # ...and the whole one reuses what it measured
    assert whole.met and whole.params == {"nprobe": 16}
    assert not any(c in measured for c in calls[len(measured):])
    assert {"nprobe": 8} in [t["params"] for t in whole.tried]  # still among the points tried


def test_tune_walks_the_hints_chain_and_the_next_deeper_one_and_the_whole_grid_when_neither_reaches():
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((300, 8)).astype(np.float32)
    held = HeldOut.given(rng.standard_normal((40, 8)), 40)
    gt = exact_search(held.xq, [(np.arange(300), xb)], 10)[1]
    grid = {"nprobe": VALUES, "k_factor": [4, 16, 64, 256]}
    hint = {"nprobe": 8, "k_factor": 16}
    # (the chain's smallest nprobe meeting the target by k_factor, the settings that may win (the faster batch of
    # the chains' answers), the chains that must be measured)
    for reach, want, walked in (({4: 8, 16: 4, 64: 2, 256: 1}, [(4, 16), (2, 64)], {16, 64}),
                                ({4: 8, 16: 10**9, 64: 16, 256: 1}, [(16, 64)], {16, 64}),
                                ({4: 10**9, 16: 10**9, 64: 10**9, 256: 4}, [(4, 256)], {16, 64, 256})):
        calls: list = []
        search = _search_reaching(reach, gt, calls)
        tuned = tune(lambda q, k, p, s=search: (None, s(q, k, p)), held, [(np.arange(300), xb)], grid, 0.95,
                     hint=hint)
        assert tuned.met and (tuned.params["nprobe"], tuned.params["k_factor"]) in want
        assert walked <= {c["k_factor"] for c in calls} <= walked | {4}  # the whole grid only when those fall short
        assert calls[0] == hint  # the hint's chain first, from its nprobe, not the widest setting
    assert scaled_hint({"nprobe": 24, "k_factor": 16}, {"nlist": 512}, {"nlist": 2048}) == {"nprobe": 96,
                                                                                         "k_factor": 16}


def test_a_deeper_chain_too_slow_to_win_is_ruled_out_on_a_tenth_of_the_queries():
    gt = np.arange(200 * 10).reshape(200, 10)
    xq = np.zeros((200, 4), np.float32)
    grid = {"nprobe": VALUES, "k_factor": [16, 64]}
    for cost, deep_searched in (((2e-5, 1e-7), True), ((1e-7, 1e-5), False)):  # refinement cheap, then dominant
        calls, sizes = [], []
        t = tune_search_params(_search_reaching({16: 8, 64: 2}, gt, calls, cost, sizes), xq, gt, 10, 0.95, grid,
                               start={"nprobe": 8, "k_factor": 16})
        assert t.met and calls[0] == {"nprobe": 8, "k_factor": 16}
        deep = [n for c, n in zip(calls, sizes) if c["k_factor"] == 64]
        if deep_searched:  # meets at nprobe 2, faster: bisected below the hint chain's 8, found and chosen
            assert t.params == {"nprobe": 2, "k_factor": 64} and all(c["nprobe"] <= 8 for c in calls)
        else:  # a few timings of 20 of the 200 queries (a bisection by time below nprobe 8), none on all of them
            assert t.params == {"nprobe": 8, "k_factor": 16} and set(deep) == {20} and len(deep) <= 3


def test_a_deeper_chain_whose_recall_falls_short_where_it_is_fast_enough_is_ruled_out_on_a_tenth():
    gt = np.arange(200 * 10).reshape(200, 10)
    xq = np.zeros((200, 4), np.float32)
    calls, sizes = [], []  # refinement cheap: the deeper chain is affordable below nprobe 8, but misses half there
    t = tune_search_params(_search_reaching({16: 8, 64: 8}, gt, calls, (2e-5, 1e-7), sizes), xq, gt, 10, 0.95,
                           {"nprobe": VALUES, "k_factor": [16, 64]}, start={"nprobe": 8, "k_factor": 16})
    assert t.met and t.params == {"nprobe": 8, "k_factor": 16}
    deep = [n for c, n in zip(calls, sizes) if c["k_factor"] == 64]
    assert deep and set(deep) == {20}  # screened on 20 of the 200 queries, never searched on all of them


@pytest.mark.slow  # about 10 s on an idle core: tuning walks the whole grid
def test_optimize_holds_a_bounded_block_and_a_second_optimize_keeps_its_tuning(tmp_path):
    n, d = 6_000, 32
    corpus = make_realistic_corpus(n, dim=d, n_queries=8, seed=3)
    xb = np.concatenate(list(corpus.blocks()))
    ix = create_index(tmp_path / "ix", dim=d, model="none", backend="lance")
    ix.add_vectors("images", xb)
    queries = corpus.text_queries(300, seed=5)
    options = OptimizeOptions(recall=0.95, kind=DISK_KIND, exact_below=0, queries=queries, n_queries=300)
    tracemalloc.start()
    try:
        record = optimize_table(ix, "images", options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert record["kind"] == DISK_KIND and record["recall_at_10"] > 0
    # tuning walks k_factor up to 256: 300 queries x 2,560 candidates gathered at once were 2 x 98 MB of float32;
    # refined a bounded block at a time the whole optimize stays far below one such gather
    assert peak < 48 << 20, peak / 2**20
    same = OptimizeOptions(recall=record["target"], kind=DISK_KIND, exact_below=0, n_queries=200)
    kept = optimize_table(ix, "images", same)
    assert kept["n_queries"] == 300 and kept["tuned"] == record["tuned"]  # kept, not measured again on drawn ones
    ix.add_vectors("images", xb[:50])
    again = optimize_table(ix, "images", same)
    assert again["query_kind"] == "image" and again["tuned_rows"] == n + 50  # rows folded in: tuned again


def test_an_import_builds_its_index_within_the_budget_it_was_given(tmp_path, monkeypatch):
    make_clip_retrieval_dir(tmp_path / "src", bad=False)
    res = CliRunner().invoke(cli, ["index", "embeddings", str(tmp_path / "src"), "--index", str(tmp_path / "bad"),
                                   "--memory", "lots"])
    assert res.exit_code == 1 and res.output.startswith("error: ") and not (tmp_path / "bad").exists()
    asked = []
    monkeypatch.setattr(common, "DEFAULT_EXACT_BELOW", 10)  # the build at the end of an import, at a small size
    monkeypatch.setattr(common, "optimize_table", lambda index, table, options: asked.append(options.memory))
    res = CliRunner().invoke(cli, ["index", "embeddings", str(tmp_path / "src"), "--index", str(tmp_path / "ix"),
                                   "--memory", "96M"])
    assert res.exit_code == 0, res.output
    assert asked == [96 << 20]  # not the default import budget (3G or half the RAM)


def test_the_speed_check_times_a_slow_exact_scan_on_one_query_and_a_fast_one_on_more():
    from retrieval.ann.tuning import speed_check

    xq = np.zeros((100, 8), np.float32)
    asked: list[int] = []

    def scan(cost):
        def exact(q):
            asked.append(len(q))
            time.sleep(cost * len(q))   # a scan per query, as an exact search of a big table on disk costs
        return exact

    check = speed_check(lambda q: None, scan(0.3), xq)
    # a warm-up and the timed search of one 0.3 s query: the scan loses (it was 5 + 5 queries, minutes at 10M)
    assert asked == [1, 1] and check.exact_qps < 10 and not check.slower
    asked.clear()
    speed_check(lambda q: None, scan(0.0), xq)
    assert asked == [1, 1, 5, 5, 16, 25]   # cheap: timed on a twentieth, then a quarter of the batch (warm-ups first)

"""Choosing the index structure by measurement: the pure chooser, the candidate list, and an end-to-end run on a
small FAISS table (the record lists every candidate measured)."""
from __future__ import annotations

import numpy as np
import pytest

from clipdex.synthetic.embeddings import clustered, normalize
from retrieval.ann.plan import IndexPlan, choose_index
from retrieval.ann.selection import Candidate, candidate_plans, measure_candidates, pick_fastest
from retrieval.index.directory import create_index
from retrieval.index.optimize import OptimizeOptions, optimize_table


def cand(kind, recall, qps, memory=1 << 20, skipped=None):
    return Candidate(IndexPlan(kind, kind.upper(), memory_bytes=memory), {}, recall, qps, recall >= 0.9,
                     skipped=skipped)


def test_picks_the_faster_of_two_candidates_meeting_the_target():
    cands = [cand("ivf_pq_fs", 0.93, 4000.0), cand("ivf_flat", 0.97, 9000.0)]
    assert pick_fastest(cands, 0.9) == 1
    cands = [cand("ivf_pq_fs", 0.93, 9000.0), cand("ivf_flat", 0.97, 4000.0)]
    assert pick_fastest(cands, 0.9) == 0


def test_never_picks_a_candidate_missing_the_target_when_another_meets_it():
    cands = [cand("hnsw", 0.89, 50_000.0), cand("ivf_sq8", 0.91, 100.0), cand("ivf_flat", 0.5, 90_000.0)]
    assert pick_fastest(cands, 0.9) == 1
    # none meets it: the highest recall, whatever its speed
    assert pick_fastest([cand("hnsw", 0.8, 9e4), cand("ivf_sq8", 0.85, 10.0)], 0.9) == 1


def test_memory_budget_excludes_candidates():
    cands = [cand("hnsw", 0.99, 50_000.0, memory=3 << 30), cand("ivf_sq8", 0.95, 2000.0, memory=1 << 30)]
    assert pick_fastest(cands, 0.9, memory_budget=2 << 30) == 1
    assert pick_fastest(cands, 0.9, memory_budget=4 << 30) == 0
    # skipped ones are never picked; nothing measured is an error
    assert pick_fastest([cand("hnsw", 0, 0, skipped="time"), cand("ivf_flat", 0.5, 1.0)], 0.9) == 1
    with pytest.raises(ValueError):
        pick_fastest([cand("hnsw", 0, 0, skipped="time")], 0.9)


def test_candidate_plans_fit_the_budget_and_start_with_the_rule():
    n, d = 1_000_000, 512
    roomy = candidate_plans(n, d, 8 << 30, 0.95, max_candidates=4)
    assert roomy[0].factory == choose_index(n, d, 8 << 30, 0.95, exact_below=0).factory
    every = candidate_plans(n, d, 8 << 30, 0.95, max_candidates=9, max_build_ratio=float("inf"))
    assert {p.kind for p in every} == {"ivf_flat", "ivf_sq8", "hnsw", "ivf_pq_fs"}
    assert {"HNSW32,Flat", "HNSW16,Flat"} <= {p.factory for p in every}
    # build cost: at 1M rows HNSW32's graph would take over 2.5x the IVF build, so it is not even measured
    roomy = candidate_plans(n, d, 8 << 30, 0.95, max_candidates=9)
    rule = roomy[0]
    assert "HNSW32,Flat" not in {p.factory for p in roomy}
    assert all(p.build_seconds <= 2.5 * rule.build_seconds for p in roomy)
    tight = candidate_plans(n, d, 1 << 30, 0.95, max_candidates=4)
    assert tight[0].kind == "ivf_sq8" and all(p.memory_bytes <= 1 << 30 for p in tight)
    assert "hnsw" not in {p.kind for p in tight} and "ivf_flat" not in {p.kind for p in tight}
    assert len(candidate_plans(n, d, 8 << 30, 0.95, max_candidates=2)) == 2


def test_measured_candidates_report_recall_against_the_exact_oracle_and_respect_the_time_budget():
    x = clustered(3000, 16, seed=3)
    ids = np.arange(100, 3100, dtype=np.int64)
    xq = normalize(clustered(60, 16, seed=5) + 0.3 * normalize(np.random.default_rng(5).standard_normal((60, 16))))
    plans = [p for p in candidate_plans(3000, 16, 1 << 30, 0.9) if p.kind != "ivf_pq_fs"][:2]  # quick to tune
    cands = measure_candidates(ids, x, xq, np.full(60, -1), plans, 0.9, time_budget=1e6)
    assert [c.plan.factory for c in cands] == [p.factory for p in plans]
    assert all(c.skipped is None and c.met and c.recall >= 0.9 and c.qps > 0 for c in cands)
    skipped = measure_candidates(ids, x, xq, np.full(60, -1), plans, 0.9, time_budget=0)
    assert skipped[0].skipped is None and skipped[1].skipped  # the first is always measured


def test_optimize_chooses_by_measurement_and_records_the_candidates(tmp_path):
    xb = clustered(3000, 16, seed=3)
    ix = create_index(tmp_path / "ix", dim=16, model="none", backend="faiss")
    ix.add_vectors("images", xb)
    seen = []
    options = OptimizeOptions(recall=0.9, exact_below=0, n_queries=60, max_candidates=2)
    record = optimize_table(ix, "images", options, on_candidate=seen.append)
    cands = record["candidates"]
    measured = [c for c in cands if "skipped" not in c]
    assert len(cands) == 2 and len(seen) == len(measured) >= 1
    ok = [c for c in measured if c["met"]]
    assert ok and record["kind"] == max(ok, key=lambda c: c["qps"])["kind"]
    assert record["met"] and record["recall_at_10"] >= 0.9
    assert ix.manifest["tables"]["images"]["ann"]["candidates"] == cands
    # a later optimize keeps the measured structure (folds rows in, no new selection)
    ix.add_vectors("images", clustered(50, 16, seed=8))
    again = optimize_table(ix, "images", OptimizeOptions(recall=0.9, exact_below=0, n_queries=60),
                           on_candidate=seen.append)
    assert again["factory"] == record["factory"] and len(seen) == len(measured)
    ix.close()

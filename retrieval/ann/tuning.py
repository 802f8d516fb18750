"""Tuning an ANN index to a recall target on held-out queries, and choosing its structure by measurement: functions
of arrays and typed records (no store, no index directory; ``retrieval/index/optimize.py`` drives them).

Held-out queries (:class:`HeldOut`) stand in for users' ones: *text-like* queries (captions' ``text_vector``) when a
table holds captions, since text-to-image queries sit across the modality gap and are the harder case, *image-like*
ones (stored image vectors, each query's own row left out) otherwise, or users' own queries. Their exact top-10 is
the ground truth; :func:`tune` picks the cheapest search parameters of a grid (``retrieval.ann.grid_tuning
.tune_search_params``) whose recall@10 meets the target, stricter for stand-ins than for users' own queries
(:func:`tuning_target`). Its :class:`Tuned` result becomes part of the table's ANN record (``Tuned.as_record``)::

    {"recall_at_10", "target", "tuned_to", "met", "n_queries", "query_kind", "tuned" (when)}

A flat table is searched exactly: its record says so (``"note": FLAT_NOTE``) instead of a recall measured on no
queries. Tables are read as *blocks*: an iterable of (ids (m,) int64, vectors (m, d) float32), streamed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from retrieval.ann.exact import exact_search
from retrieval.ann.grid_tuning import first_at_least, tune_search_params
from retrieval.ann.plan import (
    CONFIDENCE_Z,
    DISK_KIND,
    IndexPlan,
    choose_index,
    default_nlist,
)
from retrieval.ann.selection import Candidate, batch_qps, candidate_plans, drop_self, measure_candidates, pick_fastest

log = logging.getLogger(__name__)
K = 10
CANDIDATE_QUERIES = 500  # candidates are only ranked: half the queries halve their cost (the winner is tuned on all)
FLAT_NOTE = "exact search needs no tuning"
EXACT_TIMING = 0.25  # seconds: an exact search timed on a few queries is timed on more when it took less
STAND_IN_MISS_SHARE = {"image": 0.5, "text": 0.75}  # of the misses users' queries may have (``tuning_target``)
USERS_KINDS = ("given", "served")  # held-out queries that are users' own: tuned to the target as it is

Blocks = Iterable[tuple[np.ndarray, np.ndarray]]
SearchFn = Callable[[np.ndarray, int, dict], tuple[np.ndarray, np.ndarray]]  # (xq, k, params) -> (D, I) (q, k)


def tuning_target(target: float, query_kind: str) -> float:
    """The recall@10 the held-out queries must reach so that users' queries reach ``target``.

    Queries drawn from the table stand in for users' ones, and are easier: image vectors are in distribution
    (text queries across the modality gap missed up to 1.5x as often at the same setting) and the table's own
    captions each describe an item of the table (fresh text queries missed up to 1.3x as often), measured at 1M rows
    around the target (``benchmarks/ann_stand_ins.py``, in ``benchmarks/ANN.md``). A stand-in tuning therefore
    allows only ``STAND_IN_MISS_SHARE`` of the misses, with room for sets where the gap is wider than on ours: at a
    0.95 target, 0.975 on image-like queries and 0.9625 on captions. Users' own queries (``--queries``, the served
    ones) are the real thing and are tuned to the target as it is."""
    if query_kind in USERS_KINDS:
        return float(target)
    share = STAND_IN_MISS_SHARE.get(query_kind, min(STAND_IN_MISS_SHARE.values()))
    return round(1.0 - (1.0 - float(target)) * share, 6)


@dataclass
class HeldOut:
    """Queries xq (q, d), the row each came from (q,) int64 (-1 for none to leave out), their kind (image, text,
    given, served)."""

    xq: np.ndarray
    exclude: np.ndarray
    kind: str

    @classmethod
    def given(cls, queries: np.ndarray, n_queries: int, kind: str = "given") -> "HeldOut":
        """Users' queries (q, d): the newest ``n_queries`` (the last rows), L2-normalised, none left out."""
        xq = np.ascontiguousarray(queries, dtype=np.float32)[-n_queries:]
        return cls(xq / np.linalg.norm(xq, axis=1, keepdims=True), np.full(len(xq), -1, np.int64), kind)

    @classmethod
    def drawn(cls, ids: np.ndarray, xq: np.ndarray, kind: str) -> "HeldOut":
        """Rows drawn from the table: image-like ones leave their own row (``ids`` (q,)) out of the results, text-like
        ones (captions) are not rows of the searched column and leave nothing out."""
        exclude = np.full(len(xq), -1, np.int64) if kind == "text" else np.asarray(ids, np.int64)
        return cls(np.ascontiguousarray(xq), exclude, kind)


def sample_queries(blocks: Blocks, n: int, n_queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n_queries`` of the ``n`` rows in ``blocks``, drawn uniformly in one pass: (ids (q,) int64, vectors
    (q, d) float32)."""
    p = min(1.0, 1.5 * n_queries / max(n, 1))
    rng = np.random.default_rng(seed)
    xs, ids = [], []
    for rid, x in blocks:
        pick = rng.random(len(rid)) < p
        xs.append(x[pick])
        ids.append(rid[pick])
    xq = np.concatenate(xs) if xs else np.zeros((0, dim), np.float32)
    rid = np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, np.int64)
    if len(xq) > n_queries:
        keep = np.sort(rng.choice(len(xq), n_queries, replace=False))
        xq, rid = xq[keep], rid[keep]
    return rid, xq


@dataclass
class Tuned:
    """What :func:`tune` measured: the chosen search ``params``, their recall@10 on the held-out queries, whether
    the stand-in goal ``tuned_to`` was met, the user's ``target``, and the queries' count and kind."""

    params: dict
    recall: float
    met: bool
    target: float
    tuned_to: float
    n_queries: int
    query_kind: str

    def as_record(self, when: str) -> dict:
        """The keys the ANN record keeps (``when``: the time of the tuning, ISO 8601)."""
        return {"recall_at_10": round(self.recall, 4), "target": self.target, "tuned_to": self.tuned_to,
                "met": self.met, "n_queries": self.n_queries, "query_kind": self.query_kind, "tuned": when}


def tune(search: SearchFn, held: HeldOut, blocks: Blocks, grid: dict[str, list], recall_target: float,
         hint: dict | None = None) -> Tuned:
    """The cheapest setting of ``grid`` (name -> increasing values) at which ``search`` (an index's batch search at
    given knobs) finds ``tuning_target(recall_target, held.kind)`` of the exact top-10 of the held-out queries
    (judged by the lower confidence bound, ``CONFIDENCE_Z``). ``blocks``: every row of the searched column, for the
    streamed exact oracle. ``hint`` (the setting chosen on a sample, ``scaled_hint``): only its chain and the next
    deeper one (each other knob at the hint's value or the next larger) are walked, from the hint's primary value;
    the whole grid when neither reaches the goal, without searching again a setting already measured."""
    extra = 1 if (held.exclude >= 0).any() else 0
    _, I_gt = exact_search(held.xq, blocks, K + extra)  # streamed brute force: the oracle
    I_gt = drop_self(I_gt, held.exclude, K)

    def search_fn(xq: np.ndarray, k: int, params: dict) -> np.ndarray:
        _, I = search(xq, k + extra, params)
        return drop_self(I, held.exclude, k)

    goal = tuning_target(recall_target, held.kind)
    names = list(grid)
    narrow = {n: (v if i == 0 or not hint or n not in hint else _from(v, hint[n])) for i, (n, v) in
              enumerate(grid.items())}
    result, known = None, {}  # settings measured on the narrowed grid are not searched again on the whole one
    if hint and names and narrow != grid:
        result = tune_search_params(search_fn, held.xq, I_gt, K, goal, narrow, z=CONFIDENCE_Z, start=hint,
                                    known=known)
        log.info("tuned from the sample's %s on %s: %s (met: %s)", hint, narrow, result.params, result.met)
    if result is None or not result.met:
        result = tune_search_params(search_fn, held.xq, I_gt, K, goal, grid, z=CONFIDENCE_Z, start=hint,
                                    known=known)
    return Tuned(result.params, result.recall, result.met, recall_target, goal, int(len(held.xq)), held.kind)


def _from(values: list, value) -> list:
    """``value``'s place in increasing ``values`` (``first_at_least``) and the next one."""
    i = first_at_least(values, value)
    return list(values[i:i + 2])


def scaled_hint(params: dict, sample_build: dict, full_build: dict) -> dict:
    """A setting tuned on a sample's structure carried to the full-size one: nprobe scaled by their list counts
    (the same share of the lists probed), the other knobs as they are."""
    out = dict(params)
    if "nprobe" in out and sample_build.get("nlist") and full_build.get("nlist"):
        out["nprobe"] = max(1, round(out["nprobe"] * int(full_build["nlist"]) / int(sample_build["nlist"])))
    return out


@dataclass
class Selection:
    """The structure to build at full size (``plan``, its ``reason`` saying what was measured) and every candidate
    measured on the sample (``candidates``; ``records()`` as the ANN record lists them)."""

    plan: IndexPlan
    candidates: list[Candidate] = field(default_factory=list)

    def records(self) -> list[dict]:
        return [c.as_record() for c in self.candidates]

    def hint(self) -> dict:
        """The chosen candidate's tuned setting carried to the full-size structure (``scaled_hint``; {} when none
        was measured): where tuning the full-size build starts."""
        best = next((c for c in self.candidates if c.plan is self.plan and c.skipped is None), None)
        if best is None:
            return {}
        return scaled_hint(best.params, {"nlist": default_nlist(best.sample_rows)}, self.plan.build)


def select_structure(ids: np.ndarray, x: np.ndarray, n: int, recall: float, budget: int, held: HeldOut,
                     max_candidates: int = 5, time_budget: float = 600.0,
                     on_candidate: Callable[[Candidate], None] | None = None, disk: bool = False) -> Selection:
    """Measure the candidate structures for ``n`` rows (``candidate_plans``) on a sample of them (ids (m,), x (m, d)
    unit float32) against the ``held``-out queries (the first ``CANDIDATE_QUERIES``): the full-size plan of the
    fastest meeting ``recall`` (the stand-in goal for ``held.kind``) within ``budget`` bytes."""
    plans = candidate_plans(n, x.shape[1], budget, recall, max_candidates, disk=disk)
    goal = tuning_target(recall, held.kind)
    cands = measure_candidates(ids, x, held.xq[:CANDIDATE_QUERIES], held.exclude[:CANDIDATE_QUERIES], plans, goal,
                               time_budget, on_candidate=on_candidate)
    best = cands[pick_fastest(cands, goal, budget)]
    plan = best.plan
    measured = sum(c.skipped is None for c in cands)
    which = f"fastest of {measured} measured" if len(cands) > 1 else "the only structure within the budget, measured"
    plan.reason = over_budget(n, x.shape[1], budget, recall) + (
        f"{which} on {best.sample_rows} rows: recall@10 {best.recall:.3f}, {best.qps:.0f} QPS at {best.params}")
    return Selection(plan, cands)


def over_budget(n: int, d: int, budget: int, recall: float) -> str:
    """What cannot be built for n x d vectors within ``budget`` bytes of memory, as the start of a reason ("" when
    everything fits): each structure with its estimated memory."""
    kinds = ("flat", "hnsw", "ivf_flat", "ivf_pq_fs", "ivf_sq8", DISK_KIND)
    plans = [choose_index(n, d, budget, recall, exact_below=0, kind=k) for k in kinds]
    out = [f"{p.kind} {p.memory_bytes / (1 << 30):.2f} GiB" for p in plans if p.memory_bytes > budget]
    return f"over the {budget / (1 << 30):.2f} GiB budget: {', '.join(out)}; " if out else ""


@dataclass
class SpeedCheck:
    """Batch QPS of the tuned ANN index and of exact search on the same queries."""

    ann_qps: float
    exact_qps: float

    @property
    def slower(self) -> bool:
        return self.ann_qps < 0.8 * self.exact_qps  # a clear margin: one noisy timing must not drop a good index


def speed_check(ann: Callable[[np.ndarray], object], exact: Callable[[np.ndarray], object], xq: np.ndarray,
                probe: int = 100) -> SpeedCheck | None:
    """Time the first ``probe`` queries of xq (q, d) through ``ann`` and ``exact`` (batch searches of (q', d)
    queries). Exact search is timed on one query, then on a twentieth of the batch when that took under
    ``EXACT_TIMING`` seconds, then on a quarter when that did too: a scan per query costs the same in any batch
    (0.2 s a query at 300,000 rows on disk: 5 s for a quarter of 100; seconds at 10M rows, where one query is
    plenty to see the scan lose), while a small in-memory one answers a larger batch faster per query. None without
    queries."""
    if not len(xq):
        return None
    xq = xq[:probe]
    ann_qps = batch_qps(ann, xq, repeats=2)
    exact_qps, timed = batch_qps(exact, xq[:1], repeats=1), 1
    for more in (max(1, len(xq) // 20), len(xq) // 4):
        if more > timed and timed / exact_qps < EXACT_TIMING:
            exact_qps, timed = batch_qps(exact, xq[:more], repeats=1), more
    return SpeedCheck(ann_qps, exact_qps)

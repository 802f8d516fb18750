"""Tune a table's ANN index to a recall target and record what was measured.

After an ANN index is built, a held-out sample of queries is drawn from the table itself: *text-like* queries
(the captions' ``text_vector``) when the table holds captions, since text-to-image queries sit across the modality
gap and are the harder case, *image-like* ones (stored image vectors, each query's own row left out) otherwise.
Their exact top-10 is the ground truth; :func:`retrieval.ann.plan.tune_search_params` then picks the cheapest search
parameters (nprobe / efSearch / k_factor, Lance's nprobes / refine_factor / ef) whose recall@10 meets the target
(stricter for such stand-ins than for users' own queries: :func:`tuning_target`).
The result goes into the store's ANN record, which the manifest copies (``manifest["tables"][t]["ann"]``)::

    {"kind", "factory"/"index_type", "build", "params", "recall_at_10", "target", "tuned_to", "met",
     "n_queries", "query_kind", "built_rows", "tuned" (when)}

A flat table is searched exactly: its record says so (``"note": FLAT_NOTE``) instead of a recall measured on no
queries. ``store`` here is any object with the store interface (``retrieval.store.base.Store``); this module does
not import the stores: the index layer (``Index.optimize``) builds, then calls :func:`tune_table`.
"""
from __future__ import annotations

import datetime
import functools
import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from retrieval.ann.config import AnnConfig, AnnParams
from retrieval.ann.exact import exact_search
from retrieval.ann.plan import (
    CONFIDENCE_Z,
    DEFAULT_EXACT_BELOW,
    DEFAULT_RECALL,
    KINDS,
    IndexPlan,
    check_recall,
    choose_index,
    default_memory_budget,
    tune_search_params,
)
from retrieval.ann.selection import (
    Candidate,
    batch_qps,
    candidate_plans,
    drop_self,
    measure_candidates,
    pick_fastest,
    release_freed_memory,
)

log = logging.getLogger(__name__)
K = 10
SPEED_CHECK_ROWS = 20_000  # below this both paths answer in well under a millisecond: timing noise would decide
CANDIDATE_QUERIES = 500  # candidates are only ranked: half the queries halve their cost (the winner is tuned on all)
FLAT_NOTE = "exact search needs no tuning"
STAND_IN_MISS_SHARE = {"image": 0.5, "text": 0.75}  # of the misses users' queries may have (``tuning_target``)
USERS_KINDS = ("given", "served")  # held-out queries that are users' own: tuned to the target as it is


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
    """Queries xq (q, d), the row each came from (q,) int64 (-1 for none to leave out), their kind."""

    xq: np.ndarray
    exclude: np.ndarray
    kind: str


def sample_queries(store, name: str, n_queries: int = 1000, seed: int = 0) -> HeldOut:
    """Draw up to ``n_queries`` rows uniformly (streamed): their caption vectors when the table has any, else
    their image vectors (each query's own row is then excluded from its results)."""
    schema = store.schema(name)
    n = store.count(name)
    column = "vector"
    if "text_vector" in schema.names and store.count(name, "text_vector IS NOT NULL") > 0:
        column = "text_vector"
        n = store.count(name, "text_vector IS NOT NULL")
    p = min(1.0, 1.5 * n_queries / max(n, 1))
    rng = np.random.default_rng(seed)
    xs, ids = [], []
    for rid, x in store.iter_vectors(name, column):
        pick = rng.random(len(rid)) < p
        xs.append(x[pick])
        ids.append(rid[pick])
    xq = np.concatenate(xs) if xs else np.zeros((0, store.dim), np.float32)
    rid = np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, np.int64)
    if len(xq) > n_queries:
        keep = np.sort(rng.choice(len(xq), n_queries, replace=False))
        xq, rid = xq[keep], rid[keep]
    if column == "text_vector":
        return HeldOut(np.ascontiguousarray(xq), np.full(len(xq), -1, np.int64), "text")
    return HeldOut(np.ascontiguousarray(xq), rid, "image")


def held_out(store, name: str, n_queries: int = 1000, seed: int = 0, queries: np.ndarray | None = None,
             queries_kind: str = "given") -> HeldOut:
    """The given queries (normalised; at most ``n_queries``), or a sample of the table (fewer for small tables)."""
    if queries is not None:
        xq = np.ascontiguousarray(queries, dtype=np.float32)[-n_queries:]
        return HeldOut(xq / np.linalg.norm(xq, axis=1, keepdims=True), np.full(len(xq), -1, np.int64), queries_kind)
    n_queries = min(n_queries, max(50, store.count(name) // 50))  # small tables: fewer queries
    return sample_queries(store, name, n_queries, seed)


def sample_rows(store, name: str, rows: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """About ``rows`` (ids (m,), vectors (m, d)) of the vector column drawn uniformly (streamed); all when fewer."""
    p = min(1.0, rows / max(store.count(name), 1))
    rng = np.random.default_rng(seed)
    ids, xs = [], []
    for rid, x in store.iter_vectors(name, "vector"):
        if p < 1.0:
            pick = rng.random(len(rid)) < p
            rid, x = rid[pick], x[pick]
        xs.append(x)
        ids.append(rid)
    if not xs:
        return np.zeros(0, np.int64), np.zeros((0, store.dim), np.float32)
    return np.concatenate(ids), np.ascontiguousarray(np.concatenate(xs), dtype=np.float32)


def tune_table(store, name: str, recall_target: float = DEFAULT_RECALL, n_queries: int = 1000,
               seed: int = 0, queries: np.ndarray | None = None, queries_kind: str = "given",
               held: HeldOut | None = None) -> dict:
    """Measure and tune the table's ANN index; persist and return its record (see the module docstring).

    ``queries`` (q, d): held-out queries to tune on instead of a sample of the table (e.g. real user queries;
    ``queries_kind`` names them in the record: given, served). ``held``: the held-out queries already drawn (the
    caller's; then ``queries`` and ``seed`` are not used)."""
    check_recall(recall_target)
    info = store.ann_info(name)
    if info["kind"] == "flat":
        store.set_search_params(name, {}, record={"note": FLAT_NOTE})
        return store.ann_info(name)
    held = held if held is not None else held_out(store, name, n_queries, seed, queries, queries_kind)
    if not len(held.xq):
        return info
    extra = 1 if (held.exclude >= 0).any() else 0
    _, I_gt = exact_search(held.xq, store.iter_vectors(name), K + extra)  # streamed brute force: the oracle
    I_gt = drop_self(I_gt, held.exclude, K)

    def search_fn(xq: np.ndarray, k: int, params: dict) -> np.ndarray:
        store.set_search_params(name, params, persist=False)
        _, I = store.search(name, xq, k + extra)
        return drop_self(I, held.exclude, k)

    grid = store.ann_grid(name)
    goal = tuning_target(recall_target, held.kind)
    result = tune_search_params(search_fn, held.xq, I_gt, K, goal, grid, z=CONFIDENCE_Z)
    if not result.met:
        log.warning("%s: recall@10 %.3f is below the target %.3f even at the widest search", name, result.recall,
                    goal)
    record = {"recall_at_10": round(result.recall, 4), "target": recall_target, "tuned_to": goal,
              "met": result.met, "n_queries": int(len(held.xq)), "query_kind": held.kind,
              "tuned": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    store.set_search_params(name, result.params, record=record)
    return store.ann_info(name)


def plan_for(index, table: str, recall: float = DEFAULT_RECALL, memory: int | None = None,
             kind: str | None = None, exact_below: int = DEFAULT_EXACT_BELOW) -> IndexPlan:
    """The index ``optimize_table`` would build for the table now (its estimate printed before building)."""
    return choose_index(index.store.count(table), index.dim, memory, recall, exact_below, kind)


def optimize_table(index, table: str, recall: float = DEFAULT_RECALL, memory: int | None = None,
                   kind: str | None = None, exact_below: int = DEFAULT_EXACT_BELOW, rebuild: bool = False,
                   n_queries: int = 1000, on_plan: Callable[[IndexPlan], None] | None = None,
                   queries: np.ndarray | None = None, select: bool = True, max_candidates: int = 5,
                   time_budget: float = 600.0, sample_size: int = 100_000,
                   on_candidate: Callable[[Candidate], None] | None = None, queries_kind: str = "given") -> dict:
    """Build (or fold pending rows into) the table's ANN index for ``recall`` within ``memory`` bytes, tune its
    search parameters on held-out queries and record the measured recall@10 in the manifest; returns the record.

    ``kind``: force an index kind (faiss: flat, hnsw, ivf_flat, ivf_sq8, ivf_pq_fs; lance: IVF_PQ, IVF_FLAT,
    IVF_HNSW_SQ, IVF_HNSW_PQ). ``on_plan`` receives the plan (with its build time and memory estimate) first.

    ``select`` (FAISS, no ``kind``, a table of at least ``exact_below`` rows being indexed for the first time or
    rebuilt): the structure is chosen by measurement (``retrieval.ann.selection``): up to ``max_candidates`` structures
    within the budget are built on ``sample_size`` rows, tuned to ``recall`` on the held-out queries and timed,
    within about ``time_budget`` seconds; the fastest meeting the target is built (every candidate's figures go
    into the record's ``candidates``); ``on_candidate`` receives each measurement.
    """
    check_recall(recall)
    kind_forced = kind is not None
    if kind is not None:
        index.store.check_kind(kind)  # refused before anything is planned, built or compacted
    params = {"recall": recall, "tune": False, "memory": memory or None, "rebuild": rebuild}
    store, candidates = index.store, None
    current = store.ann_info(table)

    @functools.cache
    def held() -> HeldOut:  # drawn once (a sample streams the table) for selection, tuning and the speed check
        return held_out(store, table, n_queries, 0, queries, queries_kind)

    if (select and kind is None and store.count(table) >= max(exact_below, 1)
            and (rebuild or current["kind"] == "flat")):
        budget = int(memory if memory is not None else default_memory_budget())
        plan, candidates = select_structure(index, table, recall, budget, held(), max_candidates, time_budget,
                                            sample_size, on_candidate)
        release_freed_memory()  # the sample and the candidates' indexes: before the full-size build
        kind = plan.kind
        params.update(factory=plan.factory, build=plan.build)
        if on_plan is not None:
            on_plan(plan)
    elif kind is None and "candidates" in current and current["kind"] != "flat":
        kind = current["kind"]  # keep the measured choice: fold new rows in
        params.update(factory=current.get("factory"), build=current.get("build", {}))
    elif on_plan is not None:
        on_plan(plan_for(index, table, recall, memory, kind if kind in KINDS else None, exact_below))
    t0 = time.perf_counter()
    index.optimize(table, AnnConfig(kind or "auto", exact_below, AnnParams(**params)))
    log.info("%s: built %s in %.0f s", table, params.get("factory") or kind, time.perf_counter() - t0)
    t0 = time.perf_counter()
    record = tune_table(store, table, recall, held=held() if store.ann_info(table)["kind"] != "flat" else None)
    log.info("%s: tuned to %s (recall@10 %s) in %.0f s", table, record.get("params"), record.get("recall_at_10"),
             time.perf_counter() - t0)
    if candidates is not None:
        store.set_search_params(table, record["params"], record={"candidates": candidates})
        record = store.ann_info(table)
    slower = (record["kind"] != "flat" and not kind_forced and candidates is not None
              and store.count(table) >= SPEED_CHECK_ROWS and _slower_than_exact(store, table, held()))
    if record["kind"] != "flat" and not kind_forced and (not record.get("met") or slower):
        why = (f"exact search: the ANN index measured {'slower than exact search' if slower else 'below the target'}"
               f" (recall@10 {record.get('recall_at_10')}, target {recall})")
        log.warning("%s: %s", table, why)
        index.optimize(table, AnnConfig("flat", exact_below, AnnParams(recall=recall, tune=False)))
        store.set_search_params(table, {}, record={"note": why, "candidates": candidates or []})
        record = store.ann_info(table)
    index.refresh_counts()
    index.save_manifest()
    return record


def _slower_than_exact(store, table: str, held: HeldOut, probe: int = 100) -> bool:
    """Whether the first ``probe`` held-out queries run faster exactly than through the table's tuned ANN index
    (batch QPS; exact search is timed on a quarter of the batch: its cost per query does not depend on the batch)."""
    if not len(held.xq):
        return False
    xq = held.xq[:probe]
    ann = batch_qps(lambda q: store.search(table, q, K), xq, repeats=2)
    exact = batch_qps(lambda q: store.search(table, q, K, exact=True), xq[:max(1, len(xq) // 4)], repeats=1)
    log.info("%s: ANN %.0f QPS, exact %.0f QPS", table, ann, exact)
    return ann < 0.8 * exact  # a clear margin: one noisy timing must not drop a good index


def select_structure(index, table: str, recall: float, budget: int, held: HeldOut, max_candidates: int = 5,
                     time_budget: float = 600.0, sample_size: int = 100_000,
                     on_candidate: Callable[[Candidate], None] | None = None) -> tuple[IndexPlan, list[dict]]:
    """Measure candidate structures on a sample of the table against the ``held``-out queries; the full-size plan
    of the fastest meeting ``recall`` within ``budget`` bytes, and every candidate's record."""
    store = index.store
    n = store.count(table)
    plans = candidate_plans(n, index.dim, budget, recall, max_candidates)
    ids, x = sample_rows(store, table, sample_size)
    goal = tuning_target(recall, held.kind)
    cands = measure_candidates(ids, x, held.xq[:CANDIDATE_QUERIES], held.exclude[:CANDIDATE_QUERIES], plans, goal,
                               time_budget, on_candidate=on_candidate)
    best = cands[pick_fastest(cands, goal, budget)]
    plan = best.plan
    plan.reason = (f"fastest of {sum(c.skipped is None for c in cands)} measured on {best.sample_rows} rows: "
                   f"recall@10 {best.recall:.3f}, {best.qps:.0f} QPS at {best.params}")
    return plan, [c.as_record() for c in cands]

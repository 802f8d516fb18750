"""Choose an ANN index structure by measurement: build the candidates the memory budget allows on a sample of the
table, tune each one's search knobs to the recall target on held-out queries, time a query batch at the tuned
setting and keep the fastest that meets the target.

Pure parts (no faiss, no store): :func:`candidate_plans` (which structures to try, within the budget, the rule-based
choice first) and :func:`pick_fastest` (the fastest candidate meeting the target within the budget; the one with
the highest recall when none meets it). :func:`measure_candidates` builds and times them with faiss, bounded by
``max_candidates`` and ``time_budget`` seconds (candidates start while time is left). Each measurement becomes a
dict in the ANN record's ``candidates``::

    {"kind", "factory", "sample_rows", "params", "recall_at_10", "qps", "met", "memory_bytes" (at full size),
     "build_s"} or {"kind", "factory", "skipped": reason}
"""
from __future__ import annotations

import ctypes
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from retrieval.ann import structures as faiss_ann
from retrieval.ann.exact import exact_search
from retrieval.ann.grid_tuning import tune_search_params
from retrieval.ann.plan import CONFIDENCE_Z, DEFAULT_RECALL, DISK_KIND, IndexPlan, choose_index

log = logging.getLogger(__name__)
K = 10
SEARCHABLE = ("ivf_flat", "ivf_sq8", "hnsw", "ivf_pq_fs")  # the FAISS structures worth measuring
EF_GRID = [10, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
NPROBE_GRID = [1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]
K_FACTOR_GRID = [4, 16, 64, 256]  # refinement depth: each value is one chain over nprobe while tuning (image-like
# queries sit among near-ties that 4-bit codes cannot order: at 1M rows they need 64 or more candidates per result)
K_FACTOR_GRID_DISK = [4, 16, 64]  # refined from disk, each candidate one random read: at 10M rows, tuned on image
# queries, k_factor 256 won with nprobe 96, and fresh text queries (which need a wider probe, not a deeper re-rank)
# got 0.939; k_factor 64 gave them 0.975-0.984 at nprobe 512-1024, and faster (benchmarks/ANN.md, issue 21)


@dataclass
class Candidate:
    """One measured structure: ``plan`` at full size (memory), the tuned ``params``, recall@10 and batch QPS at
    them on the sample, and whether the target was met; ``skipped`` says why it was not measured."""

    plan: IndexPlan
    params: dict = field(default_factory=dict)
    recall: float = 0.0
    qps: float = 0.0
    met: bool = False
    build_s: float = 0.0
    sample_rows: int = 0
    skipped: str | None = None

    def as_record(self) -> dict:
        head = {"kind": self.plan.kind, "factory": self.plan.factory}
        if self.skipped:
            return {**head, "skipped": self.skipped}
        return {**head, "sample_rows": self.sample_rows, "params": dict(self.params),
                "recall_at_10": round(self.recall, 4), "qps": round(self.qps, 1), "met": self.met,
                "memory_bytes": int(self.plan.memory_bytes), "build_s": round(self.build_s, 1)}


def candidate_plans(n: int, d: int, memory_budget: int, recall_target: float = DEFAULT_RECALL,
                    max_candidates: int = 5, max_build_ratio: float = 2.5, disk: bool = False) -> list[IndexPlan]:
    """Structures worth measuring for n x d vectors: the rule-based choice (``choose_index``) first, then the other
    SEARCHABLE kinds (and HNSW with half the links) whose full-size memory estimate fits ``memory_budget`` bytes,
    cheapest estimated build first; at most ``max_candidates`` (>= 1). The rule's choice is kept even over budget
    when nothing else fits. A structure whose estimated build takes more than ``max_build_ratio`` times the rule's
    (and over 30 s) is left out: on a large table HNSW's build alone would cost more than the search saves. With
    ``disk`` (the store keeps vectors beside the index) the codes refined from disk (``DISK_KIND``) are one more."""
    rule = choose_index(n, d, memory_budget, recall_target, exact_below=0, disk=disk)
    kinds = [*SEARCHABLE, DISK_KIND] if disk else SEARCHABLE
    others = [choose_index(n, d, memory_budget, recall_target, exact_below=0, kind=k) for k in kinds]
    others.append(_sparser_hnsw(next(p for p in others if p.kind == "hnsw"), n, d))
    others = sorted((p for p in others if p.factory != rule.factory and p.memory_bytes <= memory_budget
                     and p.build_seconds <= max(max_build_ratio * rule.build_seconds, 30.0)),
                    key=lambda p: (p.build_seconds, p.memory_bytes))
    return [rule, *others][:max(1, int(max_candidates))]


def _sparser_hnsw(plan: IndexPlan, n: int, d: int) -> IndexPlan:
    """HNSW with half the links of ``plan`` (cheaper hops; may still reach the target with a wider search)."""
    M = max(8, int(plan.build["M"]) // 2)
    build = {"M": M, "efConstruction": 2 * M + 16}
    scale = (M / plan.build["M"]) ** 2
    return IndexPlan("hnsw", f"HNSW{M},Flat", build, dict(plan.search), int(n * (4 * d + 8 * M + 16)),
                     round(plan.build_seconds * scale, 1), "fewer graph links")


def pick_fastest(candidates: Sequence[Candidate], recall_target: float, memory_budget: int | None = None) -> int:
    """Index of the candidate to build: among the measured ones within ``memory_budget`` bytes (all when None),
    the highest QPS of those meeting ``recall_target``; when none meets it, the highest recall (then QPS).
    Over-budget candidates are used only when no measured one fits. Raises ValueError when none was measured."""
    measured = [i for i, c in enumerate(candidates) if c.skipped is None]
    if not measured:
        raise ValueError("no candidate was measured")
    fits = [i for i in measured if memory_budget is None or candidates[i].plan.memory_bytes <= memory_budget]
    pool = fits or measured
    ok = [i for i in pool if candidates[i].recall >= recall_target]
    if ok:
        return max(ok, key=lambda i: (candidates[i].qps, -i))
    return max(pool, key=lambda i: (candidates[i].recall, candidates[i].qps, -i))


def search_grid(plan: IndexPlan) -> dict:
    """The search knobs tuning walks for a FAISS structure (name -> increasing values), the one grid: candidates
    are measured on it and the stores' ``ann_grid`` returns it for the structure they built."""
    if plan.kind == "hnsw":
        return {"efSearch": list(EF_GRID)}
    nlist = int(plan.build.get("nlist") or plan.factory.split(",")[0][3:])  # older records: from the factory
    grid = {"nprobe": [v for v in NPROBE_GRID if v <= nlist]}
    if plan.kind == DISK_KIND:
        grid["k_factor"] = list(K_FACTOR_GRID_DISK)
    elif "RFlat" in plan.factory or "Refine" in plan.factory:
        grid["k_factor"] = list(K_FACTOR_GRID)
    return grid


def batch_qps(search: Callable[[np.ndarray], object], xq: np.ndarray, repeats: int = 3) -> float:
    """Queries per second of one batch search of xq (q, d), best of ``repeats`` (after one warm-up)."""
    search(xq[:min(len(xq), 16)])
    best = math.inf
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        search(xq)
        best = min(best, time.perf_counter() - t0)
    return len(xq) / max(best, 1e-9)


def release_freed_memory() -> None:
    """Hand memory the candidates freed back to the system (glibc keeps freed heap pages otherwise, and the
    full-size build that follows would stack on them). A no-op where ``malloc_trim`` does not exist."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def drop_self(I: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """Results (q, k+1) without each query's own row (``exclude`` (q,), -1 for none) -> (q, k)."""
    out = np.full((len(I), k), -1, np.int64)
    for j, (row, own) in enumerate(zip(I, exclude)):
        row = row[(row != own) | (own < 0)]
        out[j, :min(k, len(row))] = row[:k]
    return out


def _at_sample_size(full: IndexPlan, m: int, d: int, recall_target: float) -> IndexPlan:
    """The same structure as ``full`` (same codes and refinement) with its list count sized for m rows."""
    if not full.kind.startswith("ivf"):
        return full  # a graph has no size-dependent build parameters
    small = choose_index(m, d, None, recall_target, exact_below=0, kind=full.kind)
    rest = full.factory.split(",", 1)[1]
    build = {**full.build, "nlist": small.build["nlist"], "train_rows": small.build["train_rows"]}
    return IndexPlan(full.kind, f"IVF{small.build['nlist']},{rest}", build, small.search, small.memory_bytes,
                     small.build_seconds, full.reason)


def measure_candidates(ids: np.ndarray, x: np.ndarray, xq: np.ndarray, exclude: np.ndarray,
                       plans: Sequence[IndexPlan], recall_target: float, time_budget: float = 600.0,
                       seed: int = 0, on_candidate: Callable[[Candidate], None] | None = None) -> list[Candidate]:
    """Build each plan's structure over the sample (ids (m,), x (m, d) unit float32) with FAISS, tune it to
    ``recall_target`` on queries xq (q, d) (``exclude`` (q,): the row id each query came from, -1 for none) and
    time a batch at the tuned setting. The first plan is always measured; a later one is started only while less
    than ``time_budget`` seconds have been spent (a soft bound: a started candidate finishes). The plans are
    full-size: the sample's index uses its own (smaller) list count, sized like ``choose_index`` would for m rows."""
    m, d = x.shape
    extra = 1 if (exclude >= 0).any() else 0
    _, I_gt = exact_search(xq, [(ids, x)], K + extra)
    I_gt = drop_self(I_gt, exclude, K)
    rng = np.random.default_rng(seed)
    t_start = time.perf_counter()
    out: list[Candidate] = []
    for j, full in enumerate(plans):
        small = _at_sample_size(full, m, d, recall_target)
        spent = time.perf_counter() - t_start
        if j and spent >= time_budget:
            out.append(Candidate(full, skipped=f"time budget ({spent:.0f}s of {time_budget:.0f}s spent)"))
            continue
        factory = small.factory + (",Refine(SQfp16)" if full.kind == DISK_KIND else "")  # same ranking as the
        t0 = time.perf_counter()  # float16 vectors on disk: the sample is measured with them in memory
        train_rows = min(m, int(small.build.get("train_rows", m)))
        sample = x[np.sort(rng.choice(m, train_rows, replace=False))] if train_rows < m else x
        index = faiss_ann.build_index(factory, d, sample, [(ids, x)], small.build)
        build_s = time.perf_counter() - t0

        def search_fn(q: np.ndarray, k: int, params: dict, _ix=index, _kind=full.kind) -> np.ndarray:
            _, I = faiss_ann.search(_ix, q, k + extra, faiss_ann.SearchParams(_kind, params))
            return drop_self(np.asarray(I, np.int64), exclude[:len(q)], k) if extra else I

        tuned = tune_search_params(search_fn, xq, I_gt, K, recall_target, search_grid(small), z=CONFIDENCE_Z)
        qps = batch_qps(functools.partial(search_fn, k=K, params=tuned.params), xq)
        cand = Candidate(full, tuned.params, tuned.recall, qps, tuned.met, build_s, m)
        log.info("candidate %s: recall@10 %.3f at %s, %.0f QPS (built in %.0fs on %d rows)", factory, tuned.recall,
                 tuned.params, qps, build_s, m)
        out.append(cand)
        if on_candidate is not None:
            on_candidate(cand)
        del index, search_fn
        release_freed_memory()
    return out

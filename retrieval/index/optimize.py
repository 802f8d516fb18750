"""Build, tune and record a table's ANN index in one call: :func:`optimize_table` (``clipdex optimize``, and the
automatic build after an import that brings a table to ``DEFAULT_EXACT_BELOW`` rows).

The steps: draw the held-out queries once (``retrieval.index.tune``); on a first build, choose the structure by
measurement (``retrieval.ann.tuning.select_structure``: candidates built on a sample of the table, each tuned to
the target and timed); build it through the store (``Index.optimize``), tune its search knobs, check that it beats
exact search, and fall back to exact search with a note when it does not; record everything in the manifest. The
measuring is done by functions of arrays (``retrieval.ann``); this module reads the table through the store's
interface and owns the order of the steps and the record.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from retrieval.ann.config import AnnConfig, AnnParams
from retrieval.ann.plan import (
    DEFAULT_EXACT_BELOW,
    DEFAULT_RECALL,
    DISK_KIND,
    KINDS,
    IndexPlan,
    check_recall,
    choose_index,
    default_memory_budget,
)
from retrieval.ann.selection import Candidate, release_freed_memory
from retrieval.ann.structures import Fill, filled_by
from retrieval.ann.tuning import HeldOut, K, select_structure, speed_check
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index
from retrieval.index.fulltext import full_text, has_full_text
from retrieval.index.tune import held_out, tune_table

log = logging.getLogger(__name__)
SPEED_CHECK_ROWS = 20_000  # below this both paths answer in well under a millisecond: timing noise would decide


@dataclass(frozen=True)
class OptimizeOptions:
    """What :func:`optimize_table` builds and how it measures.

    ``recall``: the recall@10 target; ``memory``: bytes the index may use (None: half the machine's RAM); ``kind``:
    force an index kind (FAISS: flat, hnsw, ivf_flat, ivf_sq8, ivf_pq_fs; Lance: IVF_PQ, IVF_FLAT, IVF_HNSW_SQ,
    IVF_HNSW_PQ, or a FAISS kind for an index beside the table); ``exact_below``: tables smaller than this are
    searched exactly; ``rebuild``: build even when the index there is matches.

    Held-out queries: ``queries`` (q, d), users' own (``queries_kind`` names them in the record: given, served),
    else up to ``n_queries`` drawn from the table.

    Selection by measurement (``select``, no ``kind``, a table of at least ``exact_below`` rows indexed for the first
    time or rebuilt): up to ``max_candidates`` structures within the memory budget are built on ``sample_size``
    rows, tuned to ``recall`` and timed, within about ``time_budget`` seconds; the fastest meeting the target is
    built and every candidate's figures go into the record's ``candidates``."""

    recall: float = DEFAULT_RECALL
    memory: int | None = None
    kind: str | None = None
    exact_below: int = DEFAULT_EXACT_BELOW
    rebuild: bool = False
    n_queries: int = 1000
    queries: np.ndarray | None = None
    queries_kind: str = "given"
    select: bool = True
    max_candidates: int = 5
    time_budget: float = 600.0
    sample_size: int = 50_000  # a candidate is only ranked on it: the chosen one is tuned again at full size


def optimize_table(index: Index, table: str, options: OptimizeOptions = OptimizeOptions(), *,
                   on_plan: Callable[[IndexPlan], None] | None = None,
                   on_candidate: Callable[[Candidate], None] | None = None, fill: Fill | None = None) -> dict:
    """Build (or fold pending rows into) the table's ANN index as ``options`` ask, tune its search parameters on
    held-out queries and record the measured recall@10 in the manifest; returns the table's ANN record.

    ``on_plan`` receives the plan (with its build time and memory estimate) before the build, ``on_candidate`` each
    candidate measured during a selection. ``fill`` adds the rows to the full-size FAISS structure in this one's
    stead (``retrieval.ann.structures.build_index``: Ray workers, ``clipdex optimize --engine ray``): the choice,
    the sample it is trained on, the tuning and the record stay this function's."""
    o = options
    check_recall(o.recall)
    kind = o.kind
    if kind is not None:
        index.store.check_kind(kind)  # refused before anything is planned, built or compacted
    params = {"recall": o.recall, "tune": False, "memory": o.memory or None, "rebuild": o.rebuild}
    store, selection = index.store, None
    current = store.ann_info(table)

    @functools.cache
    def held() -> HeldOut:  # drawn once (a sample streams the table) for selection, tuning and the speed check
        return held_out(store, table, o.n_queries, 0, o.queries, o.queries_kind)

    if (o.select and kind is None and store.count(table) >= max(o.exact_below, 1)
            and (o.rebuild or current["kind"] == "flat" or current.get("memory_bytes", 0) > (o.memory or math.inf))):
        # a structure over a budget given now is measured again: what fits may be another one
        budget = int(o.memory if o.memory is not None else default_memory_budget())
        log.info("%s: choosing an ANN structure for %d rows within %.2f GiB", table, store.count(table), budget / 2**30)
        ids, x = store.sample_vectors(table, o.sample_size)
        selection = select_structure(ids, x, store.count(table), o.recall, budget, held(), o.max_candidates,
                                     o.time_budget, on_candidate, disk=keeps_vectors(store))
        del ids, x
        release_freed_memory()  # the sample and the candidates' indexes: before the full-size build
        kind = selection.plan.kind
        params.update(factory=selection.plan.factory, build=selection.plan.build)
        if on_plan is not None:
            on_plan(selection.plan)
    elif kind is None and "candidates" in current and current["kind"] != "flat":
        kind = current["kind"]  # keep the measured choice: fold new rows in
        params.update(factory=current.get("factory"), build=current.get("build", {}))
    elif on_plan is not None:  # the index the store would build now (its estimate printed before building)
        on_plan(choose_index(store.count(table), index.dim, o.memory, o.recall, o.exact_below,
                             kind if kind in KINDS else None))
    t0 = time.perf_counter()
    with filled_by(fill) if fill is not None else contextlib.nullcontext():
        done = index.optimize(table, AnnConfig(kind or "auto", o.exact_below, AnnParams(**params)))
    log.info("%s: %s %s in %.0f s", table, "built" if done.get("rebuilt") else "kept", params.get("factory") or kind
             or current.get("factory") or current["kind"], time.perf_counter() - t0)
    t0 = time.perf_counter()
    if selection is None and still_tuned(current, store.ann_info(table), done, o):
        record = store.ann_info(table)  # nothing changed since it was tuned to this target: measuring again adds time
        log.info("%s: still tuned to %s (recall@10 %s on %s queries): not measured again", table,
                 record.get("params"), record.get("recall_at_10"), record.get("query_kind"))
    else:
        record = tune_table(store, table, o.recall, held=held() if store.ann_info(table)["kind"] != "flat" else None,
                            hint=selection.hint() if selection is not None else None)
        log.info("%s: tuned to %s (recall@10 %s) in %.0f s", table, record.get("params"),
                 record.get("recall_at_10"), time.perf_counter() - t0)
    candidates = selection.records() if selection is not None else None
    if candidates is not None:
        store.set_search_params(table, record["params"], record={
            "candidates": candidates, "reason": selection.plan.reason, "memory_budget": budget,
            "planned_memory_bytes": selection.plan.memory_bytes})
        record = store.ann_info(table)
    forced = o.kind is not None
    slower = (record["kind"] != "flat" and not forced and candidates is not None
              and store.count(table) >= SPEED_CHECK_ROWS and slower_than_exact(index, table, held()))
    if record["kind"] != "flat" and not forced and (not record.get("met") or slower):
        why = (f"exact search: the ANN index measured {'slower than exact search' if slower else 'below the target'}"
               f" (recall@10 {record.get('recall_at_10')}, target {o.recall})")
        log.warning("%s: %s", table, why)
        index.optimize(table, AnnConfig("flat", o.exact_below, AnnParams(recall=o.recall, tune=False)))
        store.set_search_params(table, {}, record={"note": why, "candidates": candidates or []})
        record = store.ann_info(table)
    if has_full_text(index, table):
        full_text(index, table).compact()  # the keyword index too: rows folded in, segments merged
    index.refresh_counts()
    index.save_manifest()
    return record


def still_tuned(current: dict, after: dict, done: dict, o: OptimizeOptions) -> bool:
    """Whether the table's index, recorded as ``current`` before the store's optimize (``done``) and as ``after``
    it, is still tuned for ``o``: the same structure over the rows it was tuned on (none pending or deleted, none
    folded in, not rebuilt), ``o`` gives no queries of its own, the same target, and it met it."""
    same_rows = (after.get("pending_rows", 1) == 0 and after.get("deleted_rows", 0) == 0
                 and current.get("tuned_rows") is not None and after.get("built_rows") == current["tuned_rows"])
    return (current.get("kind") not in (None, "flat") and after.get("kind") == current.get("kind") and same_rows
            and not done.get("rebuilt") and not done.get("folded") and o.queries is None and not o.rebuild
            and current.get("met") is True and current.get("target") == o.recall and "recall_at_10" in current)


def keeps_vectors(store) -> bool:
    """Whether the store can refine from vectors kept on disk beside its index (``DISK_KIND``)."""
    try:
        store.check_kind(DISK_KIND)
    except InvalidInput:
        return False
    return True


def slower_than_exact(index: Index, table: str, held: HeldOut) -> bool:
    """Whether the held-out queries run faster exactly than through the table's tuned ANN index (batch QPS)."""
    store = index.store
    check = speed_check(lambda q: store.search(table, q, K), lambda q: store.search(table, q, K, exact=True), held.xq)
    if check is None:
        return False
    log.info("%s: ANN %.0f QPS, exact %.0f QPS", table, check.ann_qps, check.exact_qps)
    return check.slower

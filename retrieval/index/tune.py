"""Tune a table's ANN index in place: draw held-out queries from the store, measure (``retrieval.ann.tuning``) and
record the result in the store's ANN record, which the manifest copies (``manifest["tables"][t]["ann"]``)::

    {"kind", "factory"/"index_type", "build", "params", "recall_at_10", "target", "tuned_to", "met",
     "n_queries", "query_kind", "built_rows", "tuned" (when)}

The store is used through its interface only (``retrieval.store.base.Store``: ``schema``, ``count``,
``iter_vectors``, ``search``, ``ann_info``, ``ann_grid``, ``set_search_params``).
"""
from __future__ import annotations

import datetime
import logging

import numpy as np

from retrieval.ann.plan import DEFAULT_RECALL, check_recall
from retrieval.ann.tuning import FLAT_NOTE, HeldOut, tune
from retrieval.store.base import Store

log = logging.getLogger(__name__)


def draw_queries(store: Store, name: str, n_queries: int = 1000, seed: int = 0) -> HeldOut:
    """Up to ``n_queries`` rows drawn uniformly (``Store.sample_vectors``): their caption vectors when the table has
    any (text-like), else their image vectors (image-like: each query's own row is then excluded from its
    results)."""
    column = "vector"
    if "text_vector" in store.schema(name).names and store.count(name, "text_vector IS NOT NULL") > 0:
        column = "text_vector"
    ids, xq = store.sample_vectors(name, n_queries, seed, column)
    return HeldOut.drawn(ids, xq, "text" if column == "text_vector" else "image")


def held_out(store: Store, name: str, n_queries: int = 1000, seed: int = 0, queries: np.ndarray | None = None,
             queries_kind: str = "given") -> HeldOut:
    """The given queries (normalised; at most ``n_queries``), or a sample of the table (fewer for small tables)."""
    if queries is not None:
        return HeldOut.given(queries, n_queries, queries_kind)
    return draw_queries(store, name, min(n_queries, max(50, store.count(name) // 50)), seed)  # small: fewer


def tune_table(store: Store, name: str, recall_target: float = DEFAULT_RECALL, held: HeldOut | None = None,
               hint: dict | None = None) -> dict:
    """Tune the table's ANN index to ``recall_target`` on ``held``-out queries (None: a sample of the table), persist
    the tuned knobs and what was measured, and return the ANN record (a flat table's says it needs no tuning).
    ``hint``: a setting expected near the answer (``retrieval.ann.tuning.tune``)."""
    check_recall(recall_target)
    info = store.ann_info(name)
    if info["kind"] == "flat":
        store.set_search_params(name, {}, record={"note": FLAT_NOTE})
        return store.ann_info(name)
    held = held if held is not None else held_out(store, name)
    if not len(held.xq):
        return info

    def search(xq: np.ndarray, k: int, params: dict) -> tuple[np.ndarray, np.ndarray]:
        store.set_search_params(name, params, persist=False)  # this process only, while tuning
        return store.search(name, xq, k)

    tuned = tune(search, held, store.iter_vectors(name), store.ann_grid(name), recall_target, hint)
    if not tuned.met:
        log.warning("%s: recall@10 %.3f is below the target %.3f even at the widest search", name, tuned.recall,
                    tuned.tuned_to)
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    store.set_search_params(name, tuned.params, record={**tuned.as_record(when), "tuned_rows": store.count(name)})
    return store.ann_info(name)

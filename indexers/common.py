"""What every indexer shares: the ``errors`` rows, reading stored rows back, and "the newest row per path wins".

File names go into tables through ``stored_path`` and come back through ``fs_path`` (``retrieval.io.files``), so
a name that is not UTF-8 is stored losslessly instead of stopping the run; everything in memory uses the name as
the file system gives it.
"""
from __future__ import annotations

import time
from typing import Iterable, Iterator, NamedTuple, Sequence

import pyarrow as pa

from retrieval.ann.plan import DEFAULT_EXACT_BELOW, default_memory_budget
from retrieval.index.directory import Index, now
from retrieval.index.optimize import OptimizeOptions, optimize_table
from retrieval.index.query_cache import load_queries
from retrieval.io.files import fs_path, stored_path
from retrieval.io.sources import Discovery, under_roots

ERRORS = "errors"
IMPORT_MEMORY = 3 << 30  # the most an index built at the end of an import may hold in RAM (its build peaks higher)
IMPORT_MEMORY_KEY = "import_memory"  # the manifest's budget for it, when the user gave one (index embeddings --memory)


def refresh_search(index: Index, table: str, queries=None) -> dict:
    """After an import: the first time a table reaches ``DEFAULT_EXACT_BELOW`` rows, its ANN index is chosen by
    measurement and tuned (``optimize_table``, on ``queries`` (q, d) when given, else the index's cached queries or
    a sample of the table) within the manifest's ``IMPORT_MEMORY_KEY`` budget when the user gave one, else
    ``IMPORT_MEMORY`` at most (so an import's peak stays bounded at any size; ``clipdex optimize --memory`` chooses
    again); otherwise the store compacts and folds the new rows into the index it has."""
    store = index.store
    if store.ann_info(table)["kind"] == "flat" and store.count(table) >= DEFAULT_EXACT_BELOW:
        queries, kind = (queries, "given") if queries is not None else load_queries(index.path)
        options = OptimizeOptions(exact_below=DEFAULT_EXACT_BELOW, queries=queries, queries_kind=kind or "given",
                                  memory=index.manifest.get(IMPORT_MEMORY_KEY)
                                  or min(default_memory_budget(), IMPORT_MEMORY))
        return optimize_table(index, table, options)
    return index.optimize(table)


class Failure(NamedTuple):
    """One ``errors`` row to write: which file (or ``FILE#ROW``), the stage that failed and why."""

    path: str
    stage: str
    reason: str
    bytes: int | None = None
    mtime: float | None = None

    @classmethod
    def of(cls, item, stage: str, reason: str) -> "Failure":
        """A failure of a discovered file (anything with ``path``, ``bytes`` and ``mtime``)."""
        return cls(item.path, stage, reason, item.bytes, item.mtime)


def error_table(index: Index, source_table: str, failures: Sequence[Failure]) -> pa.Table:
    """``errors`` rows (fresh ids, the time now) for ``failures`` of the indexer writing ``source_table``."""
    n = len(failures)
    return pa.table({"id": index.next_ids(ERRORS, n), "path": [stored_path(f.path) for f in failures],
                     "stage": [f.stage for f in failures], "reason": [f.reason for f in failures],
                     "when": [now()] * n, "bytes": pa.array([f.bytes for f in failures], pa.int64()),
                     "mtime": pa.array([f.mtime for f in failures], pa.float64()),
                     "source_table": [source_table] * n}, schema=index.store.schema(ERRORS))


def scan_tuples(store, table: str, columns: Sequence[str], where: str | None = None,
                paths: Iterable[str] = ("path",)) -> Iterator[tuple]:
    """Rows of ``table`` as tuples in ``columns`` order; the ``paths`` columns come back as file names."""
    convert = [c in set(paths) for c in columns]
    for b in store.scan(table, list(columns), where=where):
        cols = [b.column(i).to_pylist() for i in range(len(columns))]
        for c, conv in enumerate(convert):
            if conv:
                cols[c] = [fs_path(p) if p is not None else None for p in cols[c]]
        yield from zip(*cols)


def newest_per_path(rows: Iterable[tuple]) -> tuple[dict[str, tuple], list[int]]:
    """Rows ``(id, path, ...)`` -> ({path: (id, ...) of its newest row}, ids of the older rows of a path).

    Two rows for one path are what a crash between committing a replacement and deleting the row it replaces
    leaves; the newest (highest id) wins."""
    newest: dict[str, tuple] = {}
    older: list[int] = []
    for i, p, *rest in rows:
        old = newest.get(p)
        if old is not None:
            older.append(min(old[0], i))
            if old[0] > i:
                continue
        newest[p] = (i, *rest)
    return newest, older


def recorded_errors(store, source_table: str, legacy_untagged: bool = False) -> dict[str, tuple[int, float, int]]:
    """Recorded file failures of one indexer: path -> (error id, mtime, bytes)."""
    if not store.has_table(ERRORS):
        return {}
    accept = {source_table, None} if legacy_untagged else {source_table}  # rows written before source_table
    rows = scan_tuples(store, ERRORS, ["id", "path", "mtime", "bytes", "source_table"])
    return {p: (i, m, s) for i, p, m, s, t in rows if t in accept}


def gone_from_sources(found: Discovery, rows: dict, errors: dict, kept: set[str]) -> tuple[list[int], list[int]]:
    """For pruning: ids of the stored rows and of the error rows (both ``{path: (id, ...)}``) of files under the
    sources' roots that are no longer there; ``kept``: paths written this run, never pruned."""
    seen = {it.path for it in found.items if it.bytes is not None}

    def gone(path: str) -> bool:
        return path not in seen and under_roots(path, found.roots)

    return ([r[0] for p, r in rows.items() if gone(p) and p not in kept],
            [r[0] for p, r in errors.items() if gone(p)])


def string_literal(value: str) -> str:
    """``value`` as a SQL string literal for a store filter."""
    return "'" + value.replace("'", "''") + "'"


def finish_run(index: Index, tables: Sequence[str], changed: bool, optimize: bool, t0: float) -> float:
    """The end of every indexing run: when rows changed (and ``optimize`` is on), fold them into each table's
    search structure (:func:`refresh_search`); returns the run's elapsed seconds since ``t0`` (``time.monotonic``)."""
    if optimize and changed:
        for table in tables:
            refresh_search(index, table)
    return time.monotonic() - t0


def per_second(n: int, seconds: float) -> float:
    """A run's rate (items per second; 0 for a run that took no time)."""
    return n / seconds if seconds > 0 else 0.0

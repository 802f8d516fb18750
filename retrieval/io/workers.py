"""Shared machinery of the offline indexers: decode in worker processes, encode in batches, commit in blocks.

- ``ordered_map`` runs a picklable function over tasks in a pool of spawned worker processes, with a bounded
  number of tasks in flight (so decoded pixels never pile up when the model is the slower side), yielding
  results in task order. A crashed worker fails only the tasks in flight, which come back as ``WorkerCrash``.
- ``Committer`` gathers rows and commits them to the store in blocks (by row count or elapsed time), so a
  crash loses at most one block, and the store does not collect thousands of tiny commits.
- ``Progress`` is what indexers report through their ``on_progress`` callback.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import pyarrow as pa

from retrieval.errors import WorkersUnavailable


def default_workers() -> int:
    """Decoding workers: one per core beyond the one the model's main thread needs, between 1 and 8."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(8, n - 1))


@dataclass
class WorkerCrash:
    """Placeholder result for a task whose worker process died (segfault in a decoder, OOM kill)."""

    task: object
    reason: str = "decoder process crashed"


def ordered_map(fn: Callable, tasks: Iterable, workers: int, inflight: int | None = None) -> Iterator:
    """Yield ``fn(task)`` for each task, in order. ``workers == 0`` runs inline in this process."""
    if workers <= 0:
        for task in tasks:
            yield fn(task)
        return
    inflight = inflight or 4 * workers
    it = iter(tasks)
    ctx = mp.get_context("spawn")  # never fork a process that holds torch threads
    ex = start_pool(workers, ctx)
    pending: deque = deque()
    try:
        for task in it:
            pending.append((task, ex.submit(fn, task)))
            if len(pending) >= inflight:
                break
        while pending:
            task, fut = pending.popleft()
            try:
                result = fut.result()
            except BrokenProcessPool:
                # every task in flight is lost with the pool: report them, start a new pool, go on
                yield WorkerCrash(task)
                for other, _ in pending:
                    yield WorkerCrash(other)
                pending.clear()
                ex.shutdown(wait=False, cancel_futures=True)
                ex = start_pool(workers, ctx)
                result = None
            if result is not None:
                yield result
            for nxt in it:
                pending.append((nxt, ex.submit(fn, nxt)))
                if len(pending) >= inflight:
                    break
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _ready() -> bool:
    return True


def start_pool(workers: int, ctx) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes that has started: one that cannot (its processes die while they
    start) raises ``WorkersUnavailable`` instead of failing every task as a crash of its own file."""
    ex = ProcessPoolExecutor(workers, mp_context=ctx)
    try:
        ex.submit(_ready).result()
    except BrokenProcessPool:
        ex.shutdown(wait=False, cancel_futures=True)
        raise WorkersUnavailable(
            "the worker processes that decode files could not start. Spawned workers import the calling script "
            "again: call clipdex from a script under `if __name__ == \"__main__\":`, or pass workers=0") from None
    return ex


@dataclass
class WorkPlan:
    """What an incremental run has to do: files to (re)embed, the rows they replace, new read errors, the error
    rows made stale by retrying, and the counts of files skipped as unchanged or as known failures."""

    todo: list = field(default_factory=list)
    replaced: dict = field(default_factory=dict)      # path -> id of the row a re-embedded file replaces
    errs: list = field(default_factory=list)          # (item, stage, reason)
    stale_errors: list = field(default_factory=list)  # ids of error rows of files tried again
    unchanged: int = 0
    known_errors: int = 0


def plan_work(items, rows: dict, errors: dict, retry_errors: bool, current: Callable, skip_known=None) -> WorkPlan:
    """Split discovered items into work and skips, for every indexer alike.

    ``rows``: path -> stored row tuple (id first); ``errors``: path -> (error id, mtime, bytes);
    ``current(item, row)``: the stored row is up to date; ``skip_known(item)``: a recorded failure of an unchanged
    file may be skipped (default: always). Missing files (``item.bytes is None``) become read errors.
    """
    plan = WorkPlan()
    for item in items:
        known = errors.get(item.path)
        if (known is not None and not retry_errors and known[1] == item.mtime and known[2] == item.bytes
                and (skip_known is None or skip_known(item))):
            plan.known_errors += 1  # failed before and has not changed since (or is still missing)
            continue
        if item.bytes is None:  # listed in a manifest, but not there
            plan.errs.append((item, "read", "file not found"))
            continue
        if item.problem:  # a FIFO, a device: never opened
            plan.errs.append((item, "read", item.problem))
            continue
        old = rows.get(item.path)
        if old is not None and current(item, old):
            plan.unchanged += 1
            continue
        if old is not None:
            plan.replaced[item.path] = old[0]
        plan.todo.append(item)
    # error rows of files tried again this run: they succeed now, or a fresh error row replaces them
    plan.stale_errors = [errors[it.path][0] for it in plan.todo if it.path in errors]
    plan.stale_errors += [errors[it.path][0] for it, _, _ in plan.errs if it.path in errors]
    return plan


@dataclass
class Progress:
    """A progress report: ``done`` of ``total`` items handled, with running counts."""

    stage: str
    done: int
    total: int
    counts: dict = field(default_factory=dict)
    elapsed: float = 0.0


class Committer:
    """Buffer rows per table and commit them in blocks of ``rows`` or every ``seconds``.

    ``before_commit(table, rows)`` and ``after_commit(table, rows)`` hooks let an indexer delete superseded rows
    right after their replacements are committed.
    """

    def __init__(self, add: Callable[[str, pa.Table], None], rows: int = 2048, seconds: float = 10.0,
                 after_commit: Callable[[str, pa.Table], None] | None = None):
        self._add = add
        self.rows = rows
        self.seconds = seconds
        self.after_commit = after_commit
        self._buf: dict[str, list[pa.Table]] = {}
        self._n = 0
        self._t0 = time.monotonic()
        self.committed: dict[str, int] = {}

    def put(self, table: str, rows: pa.Table) -> None:
        if len(rows):
            self._buf.setdefault(table, []).append(rows)
            self._n += len(rows)
        if self._n >= self.rows or (self._n and time.monotonic() - self._t0 >= self.seconds):
            self.commit()

    def commit(self) -> None:
        for table, parts in list(self._buf.items()):
            rows = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
            self._add(table, rows)
            self.committed[table] = self.committed.get(table, 0) + len(rows)
            if self.after_commit is not None:
                self.after_commit(table, rows)
        self._buf.clear()
        self._n = 0
        self._t0 = time.monotonic()

"""The driver's side of ``--engine ray``: what it knows before the run (bounded by the number of shards) and the
commits it makes from what the workers hand back (fragments and shard reports, never rows).

Before the run, one pass over the ``shard`` column of ``images`` and over the paths of ``errors`` tells which of
the shards to read have rows or error rows already (a killed run's shards): only their tasks read the stored rows
back, each for its own shard. During the run, ``ShardCommits`` keeps per shard in flight the JSON of the fragments
written for it; once shards are finished (their ``END`` report came), a group of them is committed:

    1. their fragments, one Lance ``Append`` (``Index.commit_fragments``)
    2. their failures, one ``errors`` commit
    3. the rows they replace and the error rows made stale, deleted
    4. their records in ``shards``, one commit

so a shard is recorded only after its rows, and a driver killed between two steps leaves rows that the next run's
planning finds stored (an older row of a path that a kill kept is deleted then: ``StoredShard.older``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa

from indexers.common import ERRORS, Failure, error_table, scan_tuples
from indexers.images import TABLE
from indexers.shards import SHARDS, ShardRun
from retrieval.index.directory import now
from retrieval.io.shards import Shard
from retrieval.io.workers import Progress


@dataclass
class StartedShards:
    """What the index holds of the shards to read: never a stored row (``rows`` stays empty), only which shards
    have rows or error rows, and the shards' own error rows (``ShardRun``'s ``state``)."""

    rows: dict = field(default_factory=dict)
    errors: dict[str, tuple] = field(default_factory=dict)  # a shard's own error row: path -> (id, mtime, bytes)
    with_rows: set[str] = field(default_factory=set)
    with_errors: set[str] = field(default_factory=set)


def started_shards(store, shards: list[Shard]) -> StartedShards:
    """One streamed pass over ``images.shard`` and ``errors.path``: memory bounded by the shards, not the rows."""
    paths = {s.path for s in shards}
    out = StartedShards()
    for (shard,) in scan_tuples(store, TABLE, ["shard"], paths=()):
        if shard in paths:
            out.with_rows.add(shard)
    for i, p, m, b, src in scan_tuples(store, ERRORS, ["id", "path", "mtime", "bytes", "source_table"]):
        if src not in (TABLE, None):
            continue
        if p in paths:
            out.errors[p] = (i, m, b)
        cut = p.find("#")
        while cut >= 0:  # a sample's error row: SHARD#KEY (a shard's path may hold '#' too)
            if p[:cut] in paths:
                out.with_errors.add(p[:cut])
                break
            cut = p.find("#", cut + 1)
    return out


@dataclass
class _InFlight:
    fragments: list[str] = field(default_factory=list)
    rows: int = 0
    replaced: list[int] = field(default_factory=list)
    long_captions: int = 0


class ShardCommits:
    """Fragments and reports from the workers -> group commits (see the module's docstring)."""

    def __init__(self, run: ShardRun, shards: dict[str, Shard], total: int,
                 on_progress: Callable[[Progress], None] | None, t0: float):
        self.run, self.index, self.summary = run, run.index, run.summary
        self.shards, self.total, self.on_progress, self.t0 = shards, total, on_progress, t0
        self.flight: dict[str, _InFlight] = {}
        self.finished: list[tuple[Shard, _InFlight, dict]] = []
        self.done = 0
        self.last = time.monotonic()

    def fragments(self, shard: str, info: dict) -> None:
        f = self.flight.setdefault(shard, _InFlight())
        f.fragments += info["fragments"]
        f.rows += info["rows"]
        f.replaced += info["replaced"]
        f.long_captions += info["long_captions"]

    def end(self, shard: str, report: dict) -> None:
        """The shard's task is done and (order is kept) so are its fragments: commit when the group is big or old
        enough."""
        self.finished.append((self.shards[shard], self.flight.pop(shard, _InFlight()), report))
        opts = self.run.opts
        if (sum(f.rows for _, f, _ in self.finished) >= opts.commit_rows
                or time.monotonic() - self.last >= opts.commit_seconds):
            self.commit()

    def commit(self) -> None:
        """Commit the finished shards as one group."""
        if not self.finished:
            return
        index, s = self.index, self.summary
        group, self.finished = self.finished, []
        frags = [x for _, f, _ in group for x in f.fragments]
        if frags:
            index.commit_fragments(TABLE, frags)
        failures = [Failure(*x) for _, _, r in group for x in r["failures"]]
        if failures:
            index.add_rows(ERRORS, error_table(index, TABLE, failures))
        gone = [i for _, f, r in group for i in f.replaced + r["older"]]
        if gone:
            index.delete(TABLE, gone)
        stale = [i for _, _, r in group for i in r["stale"]]
        if stale:
            index.delete(ERRORS, stale)
        self._record(group)
        for _, f, r in group:
            n_updated = len(f.replaced)
            s.added += f.rows - n_updated
            s.updated += n_updated
            s.long_captions += f.long_captions
            s.shards += 1
            s.bad_shards += r["broken"] is not None
            s.errors += r["new_errors"]
            s.unchanged += r["unchanged"]
            s.known_errors += r["known_errors"]
            s.metadata_dropped += r["metadata_dropped"]
        self.done += len(group)
        self.last = time.monotonic()
        if self.on_progress is not None:
            self.on_progress(Progress(SHARDS, self.done, self.total, {"added": s.added + s.updated,
                                                                      "errors": s.errors}, self.last - self.t0))

    def _record(self, group: list[tuple[Shard, _InFlight, dict]]) -> None:
        """The group's rows in ``shards`` (one commit), replacing older records of the same shards."""
        index, n = self.index, len(group)
        rows = {"id": index.next_ids(SHARDS, n), "path": [sh.path for sh, _, _ in group],
                "bytes": [sh.bytes for sh, _, _ in group], "mtime": [sh.mtime for sh, _, _ in group],
                "samples": [r["samples"] for _, _, r in group], "errors": [r["errors"] for _, _, r in group],
                "broken": [r["broken"] for _, _, r in group], "when": [now()] * n}
        index.add_rows(SHARDS, pa.table(rows, schema=index.store.schema(SHARDS)))
        old = [self.run.done[sh.path][0] for sh, _, _ in group if sh.path in self.run.done]
        if old:
            index.delete(SHARDS, old)

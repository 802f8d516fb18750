"""One shard's bookkeeping where the shard is read (a Ray task): the local engine's rules, with only that shard's
stored rows in memory.

``read_stored_shard`` reads, from the committed Lance tables, the rows and the error rows of one shard (a filter
on the ``shard`` column, and on the ``SHARD#`` prefix of error paths); ``ShardLedger.plan`` then decides for each
sample, before it is decoded, what ``ShardRun.plan`` decides (``plan_work``: stored and current -> skipped, a
recorded failure of an unchanged shard -> skipped, else to do, replacing an older row), and keeps the shard's
counts, failures and stale error rows. Its :meth:`ShardLedger.report` is what the driver needs to commit the shard:
small (a few numbers, ids and the failures), never the rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from indexers.common import ERRORS, Failure, newest_per_path, string_literal
from indexers.images import TABLE
from retrieval.io.files import fs_path, stored_path
from retrieval.io.shard_meta import describe_dropped
from retrieval.io.shards import Shard, ShardSample, metadata_path, sample_path
from retrieval.io.sources import Item
from retrieval.io.workers import plan_work
from retrieval.store.lance_fragments import read_rows


@dataclass
class StoredShard:
    """What the index holds for one shard: rows by path (id, mtime, bytes), older rows of a path stored twice,
    and recorded failures by path (error id, mtime, bytes)."""

    rows: dict[str, tuple] = field(default_factory=dict)
    older: list[int] = field(default_factory=list)
    errors: dict[str, tuple] = field(default_factory=dict)


def shard_filter(shard: str) -> str:
    """Lance SQL: the error rows of a shard (its own, and its samples' ``SHARD#...``)."""
    p = stored_path(shard)
    return f"path = {string_literal(p)} OR starts_with(path, {string_literal(p + '#')})"


def read_stored_shard(lance_root: str | Path, shard: str, has_rows: bool, has_errors: bool) -> StoredShard:
    """The committed rows of ``shard`` (read only when the driver saw some: ``has_rows`` / ``has_errors``)."""
    out = StoredShard()
    if has_rows:
        t = read_rows(lance_root, TABLE, ["id", "path", "mtime", "bytes"], f"shard = {string_literal(shard)}")
        cols = [t.column(c).to_pylist() for c in ("id", "path", "mtime", "bytes")]
        out.rows, out.older = newest_per_path((i, fs_path(p), m, b) for i, p, m, b in zip(*cols))
    if has_errors:
        t = read_rows(lance_root, ERRORS, ["id", "path", "mtime", "bytes", "source_table"], shard_filter(shard))
        for i, p, m, b, src in zip(*(t.column(c).to_pylist() for c in t.column_names)):
            if src in (TABLE, None):  # rows written before source_table existed count as the images indexer's
                out.errors[fs_path(p)] = (i, m, b)
    return out


@dataclass
class ShardLedger:
    """The plan and tally of one shard being read: ``split`` turns a sample's metadata into the columns it writes
    and the keys left out (``shard_columns.MetaColumns.split``, possibly through a Ray actor)."""

    shard: Shard
    stored: StoredShard
    retry_errors: bool
    split: Callable[[dict], tuple[dict, list[tuple[str, str]]]]
    samples: int = 0
    errors: int = 0          # this shard's failed samples (recorded now, or before and unchanged)
    new_errors: int = 0      # error rows written this run (the summary's ``errors``)
    unchanged: int = 0
    known_errors: int = 0
    metadata_dropped: int = 0
    broken: str | None = None
    stale: list[int] = field(default_factory=list)       # error rows made stale by reading the shard again
    failures: list[Failure] = field(default_factory=list)  # new error rows, metadata notes included

    def __post_init__(self):
        own = self.stored.errors.get(self.shard.path)
        if own is not None:  # the shard's own error row: read again now
            self.stale.append(own[0])

    def plan(self, sample: ShardSample) -> tuple[Item, int | None] | None:
        """(the item to embed, the id of the row it replaces), or None: stored already, a known failure, or a
        failure recorded now."""
        self.samples += 1
        shard = self.shard
        item = Item(sample_path(shard.path, sample.key, sample.copy), shard.bytes, shard.mtime, caption=sample.caption)
        plan = plan_work([item], self.stored.rows, self.stored.errors, self.retry_errors,
                         current=lambda it, old: old[1] == it.mtime and old[2] == it.bytes)
        self.unchanged += plan.unchanged
        self.known_errors += plan.known_errors
        self.errors += plan.known_errors
        self.stale += plan.stale_errors
        if not plan.todo:
            return None
        if sample.problem:
            self.fail(Failure.of(item, sample.stage, sample.problem))
            return None
        meta, dropped = self.split(sample.meta)
        item.meta = {**meta, "shard": shard.path, "key": sample.key}
        self._note(item.path, sample.dropped + dropped)
        return item, plan.replaced.get(item.path)

    def _note(self, path: str, dropped: list[tuple[str, str]]) -> None:
        note = metadata_path(path)
        old = self.stored.errors.get(note)
        if old is not None:
            self.stale.append(old[0])
        if dropped:
            self.metadata_dropped += 1
            self.failures.append(Failure(note, "metadata", describe_dropped(dropped), self.shard.bytes,
                                         self.shard.mtime))

    def fail(self, failure: Failure) -> None:
        """A failed sample of this shard."""
        self.errors += 1
        self.new_errors += 1
        self.failures.append(failure)

    def break_off(self, reason: str) -> None:
        """The tar broke (the samples read before the damage stay)."""
        self.broken = reason
        self.new_errors += 1
        self.failures.append(Failure(self.shard.path, "read", reason, self.shard.bytes, self.shard.mtime))

    def report(self) -> dict:
        """What the driver needs to record the shard (JSON-ready)."""
        return {"samples": self.samples, "errors": self.errors, "new_errors": self.new_errors,
                "unchanged": self.unchanged, "known_errors": self.known_errors,
                "metadata_dropped": self.metadata_dropped, "broken": self.broken, "stale": self.stale,
                "older": self.stored.older, "failures": [list(f) for f in self.failures]}

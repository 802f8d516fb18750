"""The image indexer over webdataset / img2dataset shards: tar -> decode (worker processes) -> encode -> commit.

A sample's identity is its shard and key: its row's ``path`` is ``SHARD#KEY`` (``retrieval.io.shards``), with
``shard`` and ``key`` columns, the shard's size and mtime in ``bytes`` and ``mtime``, its caption (``txt``) and
its metadata (``json`` flattened, img2dataset's parquet joined by key) as string columns. Failed downloads,
samples without an image, images that do not decode and json that does not parse become ``errors`` rows of their
sample; a broken tar (truncated, not a tar) an ``errors`` row of the shard, after the samples read before the
damage. Nothing stops the run.

Incremental and resumable at two grains, with the image indexer's planner (``plan_work``), error rows and
committer: once all rows of a shard are committed, one row in the ``shards`` table records its path, size and
mtime, and later runs skip that shard without opening it; a shard without that row (a killed run) is read
again, and each of its samples already stored is skipped, so after ``kill -9`` a re-run ends with every sample
exactly once. A shard that changed (size or mtime) is read again and its samples' rows replaced.
``ShardRun`` is that bookkeeping, shared with the Ray engine (``indexers/ray_engine.py``), which runs it on the
driver.

One row per key: a key's later samples in a shard (``read_shard``: only the first is read) are ``errors`` rows at
``SHARD#KEY.dupN``. Metadata becomes columns only under names every store takes (``retrieval.io.shard_meta``), never
a built-in column's name (in any case: ``Width`` beside the image's ``width`` would only mislead), at most
``MAX_META_COLUMNS`` of them: a sample indexed with keys left out gets an ``errors`` row at ``SHARD#KEY.json``
(stage ``metadata``, the keys and why), counted in ``metadata_dropped``, not in ``errors``. Missing shards (named by
a pattern) are ``errors`` rows committed in blocks, recorded once while they stay missing.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from indexers.common import Failure, error_table, refresh_search, scan_tuples
from indexers.images import (
    TABLE,
    Decoded,
    Embedded,
    ImageIndexOptions,
    ImageRowWriter,
    IndexSummary,
    StoredImages,
    replace_after_commit,
)
from indexers.probe_rows import CodeShards, chain, coding_available, decode_with_codes
from indexers.shard_columns import MetaColumns
from retrieval.index.directory import Index, now
from retrieval.index.schemas import base_fields
from retrieval.io.imageprep import ImagePrep, ImageReadError
from retrieval.io.shard_meta import describe_dropped
from retrieval.io.shards import (
    Shard,
    ShardDiscovery,
    ShardError,
    ShardSample,
    metadata_path,
    read_shard,
    sample_path,
)
from retrieval.io.sources import Item
from retrieval.io.workers import Committer, Progress, WorkerCrash, default_workers, ordered_map, plan_work

log = logging.getLogger(__name__)
SHARDS = "shards"
IDENTITY = [pa.field("shard", pa.string()), pa.field("key", pa.string())]


@dataclass
class ShardSummary(IndexSummary):
    shards: int = 0            # shards read this run
    shards_unchanged: int = 0  # shards skipped whole (recorded as done, same size and mtime)
    bad_shards: int = 0        # shards whose tar is broken (their readable samples are indexed)
    metadata_dropped: int = 0  # samples indexed with some metadata keys not kept as columns (errors rows say which)


def decode_sample(path: str, data: bytes, prep: ImagePrep, code: bool = False) -> Decoded | Failure:
    """One tar member's image bytes -> pixels (and, with ``code``, its probe codes for dedup:
    ``indexers.probe_rows``), or the failure (a decoder bug is a failure too, never a crash)."""
    try:
        pixels, digest, w, h, codes = decode_with_codes(data, prep, code)
        return Decoded(path, digest, pixels, w, h, codes)
    except ImageReadError as exc:
        return Failure(path, exc.stage, exc.reason)
    except Exception as exc:  # a decoder bug must not stop the run
        return Failure(path, "decode", f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class SampleChunk:
    """A worker's share: image bytes of samples of one shard (``last``: the shard's final chunk)."""

    shard: str
    samples: tuple[tuple[str, bytes], ...]
    prep: ImagePrep
    last: bool
    code: bool = False   # take probe codes too


def _decode_chunk(task: SampleChunk) -> list[Decoded | Failure]:
    return [decode_sample(path, data, task.prep, task.code) for path, data in task.samples]


@dataclass
class _Tally:
    """One shard's progress this run: samples seen, samples failed, error rows made stale by reading it again."""

    samples: int = 0
    errors: int = 0
    broken: str | None = None
    stale: list[int] = field(default_factory=list)


def builtin_columns(dim: int) -> list[str]:
    """The ``images`` table's own columns for shards (no json key may take their names)."""
    return [f.name for f in base_fields(TABLE, dim) + IDENTITY]


class ShardRun:
    """The ``images`` table's bookkeeping for shards: which shards and samples are still to do, their rows and
    error rows (through the image indexer's writer and committer), and a shard's record once it is complete."""

    def __init__(self, index: Index, opts: ImageIndexOptions, summary: ShardSummary, state=None):
        """``state``: what the index holds (``rows`` and ``errors`` by path, as ``StoredImages``); by default every
        stored row's path (the Ray engine passes only the shards' own error rows: its tasks read their shard's)."""
        self.index, self.opts, self.summary = index, opts, summary
        schema = index.ensure_table(TABLE, IDENTITY)
        index.ensure_table("errors")
        index.ensure_table(SHARDS)
        if state is None:
            state = StoredImages(index)
            state.drop_duplicates(index)
        self.state = state
        cols = ["id", "path", "bytes", "mtime", "samples", "errors", "broken"]
        self.done = {p: (i, *rest) for i, p, *rest in scan_tuples(index.store, SHARDS, cols)}
        self.replaced: dict[str, int] = {}
        self.codes = CodeShards(index.path) if opts.probe_codes and coding_available() else None
        self.committer = Committer(index.add_rows, opts.commit_rows, opts.commit_seconds,
                                   chain(replace_after_commit(index, self.replaced, set()),
                                         self.codes and self.codes.after_commit))
        self.writer = ImageRowWriter(index, schema, self.committer, summary, self.replaced, self.codes)
        self.items: dict[str, Item] = {}
        self.tally: dict[str, _Tally] = {}
        self.columns = MetaColumns(schema.names, builtin_columns(index.dim))

    def todo(self, found: ShardDiscovery) -> list[Shard]:
        """The shards to read: those without a record of the same size and mtime (and, with ``retry_errors``,
        those recorded with errors)."""
        out = []
        for sh in found.shards:
            err = self.state.errors.get(sh.path)
            if sh.bytes is None and err and err[1:] == (None, None) and not self.opts.retry_errors:
                self.summary.known_errors += 1  # still missing, and recorded so
                continue
            rec = self.done.get(sh.path)
            if rec and rec[1:3] == (sh.bytes, sh.mtime) and not (self.opts.retry_errors and (rec[4] or rec[5])):
                self.summary.shards_unchanged += 1
                self.summary.unchanged += rec[3] - rec[4]
                self.summary.known_errors += rec[4] + (rec[5] is not None)
                continue
            out.append(sh)
        return out

    def record_missing(self, todo: list[Shard]) -> list[Shard]:
        """Record the missing shards of ``todo`` (an ``errors`` row each, committed in blocks, not one commit per
        shard); returns the others."""
        stale: list[int] = []
        for sh in todo:
            if sh.bytes is None:
                self.begin(sh)
                self.broken(sh, "shard not found")
                stale += self.tally.pop(sh.path).stale
        self.committer.commit()
        if stale:
            self.index.delete("errors", stale)
        return [sh for sh in todo if sh.bytes is not None]

    def begin(self, shard: Shard) -> None:
        tally = self.tally[shard.path] = _Tally()
        self.summary.shards += 1
        if shard.path in self.state.errors:  # the shard's own error row: read again now
            tally.stale.append(self.state.errors[shard.path][0])

    def plan(self, shard: Shard, sample: ShardSample) -> Item | None:
        """The item of a sample still to embed, or None (already stored, a known failure, or a failure recorded
        now)."""
        tally = self.tally[shard.path]
        tally.samples += 1
        item = Item(sample_path(shard.path, sample.key, sample.copy), shard.bytes, shard.mtime, caption=sample.caption)
        plan = plan_work([item], self.state.rows, self.state.errors, self.opts.retry_errors,
                         current=lambda it, old: old[1] == it.mtime and old[2] == it.bytes)
        self.summary.unchanged += plan.unchanged
        self.summary.known_errors += plan.known_errors
        tally.errors += plan.known_errors
        tally.stale += plan.stale_errors
        if not plan.todo:
            return None
        self.replaced.update(plan.replaced)
        if sample.problem:
            self.fail(Failure.of(item, sample.stage, sample.problem))
            return None
        meta, dropped = self.columns.split(sample.meta)
        item.meta = {**meta, "shard": shard.path, "key": sample.key}
        self._note(shard, item.path, sample.dropped + dropped)
        self.items[item.path] = item
        return item

    def _note(self, shard: Shard, path: str, dropped: list[tuple[str, str]]) -> None:
        """The ``errors`` row of a sample written with metadata keys left out (replacing one from an older read)."""
        note = metadata_path(path)
        old = self.state.errors.get(note)
        if old is not None:
            self.tally[shard.path].stale.append(old[0])
        if dropped:
            self.summary.metadata_dropped += 1
            failure = Failure(note, "metadata", describe_dropped(dropped), shard.bytes, shard.mtime)
            self.committer.put("errors", error_table(self.index, TABLE, [failure]))

    def fail(self, failure: Failure) -> None:
        """Record a failed sample (path ``SHARD#KEY``) or shard (its path)."""
        for shard, tally in self.tally.items():  # the shards in flight: a few
            if failure.path.startswith(shard + "#"):
                tally.errors += 1
                break
        self.writer.fail([failure])

    def broken(self, shard: Shard, reason: str) -> None:
        self.summary.bad_shards += 1
        self.tally[shard.path].broken = reason
        self.fail(Failure(shard.path, "read", reason, shard.bytes, shard.mtime))

    def emit(self, rows: list[Embedded], text_vectors: pa.Array | None = None) -> None:
        """Write embedded samples, first adding any metadata column they bring (the buffer is committed before
        the table's schema grows, so no block mixes schemas)."""
        have = set(self.writer.schema.names)
        new = sorted({k for r in rows for k in r.item.meta} - have)
        if new:
            self.committer.commit()
            self.writer.use_schema(self.index.ensure_table(TABLE, [pa.field(c, pa.string()) for c in new]))
        self.writer.emit(rows, text_vectors=text_vectors)

    def finish(self, shard: Shard) -> None:
        """Commit everything buffered, then record the shard as done (replacing an older record)."""
        self.committer.commit()
        tally = self.tally.pop(shard.path)
        if tally.stale:
            self.index.delete("errors", tally.stale)
        if shard.bytes is None:
            return  # a missing shard is only an error row (``record_missing``)
        old = self.done.get(shard.path)
        row = {"id": self.index.next_ids(SHARDS, 1), "path": [shard.path], "bytes": [shard.bytes],
               "mtime": [shard.mtime], "samples": [tally.samples], "errors": [tally.errors],
               "broken": [tally.broken], "when": [now()]}
        self.index.add_rows(SHARDS, pa.table(row, schema=self.index.store.schema(SHARDS)))
        if old is not None:
            self.index.delete(SHARDS, [old[0]])
        self.items = {p: it for p, it in self.items.items() if not p.startswith(shard.path + "#")}

    def samples(self, shard: Shard) -> Iterator[tuple[Item, bytes]]:
        """The samples of ``shard`` still to embed, with their image bytes; failures and a broken tar recorded."""
        self.begin(shard)
        try:
            for sample in read_shard(shard):
                item = self.plan(shard, sample)
                if item is not None:
                    yield item, sample.image
        except ShardError as exc:
            self.broken(shard, exc.reason)


def index_shards(index: Index, found: ShardDiscovery, options: ImageIndexOptions | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> ShardSummary:
    """Bring the ``images`` table of ``index`` up to date with the samples of the shards in ``found``."""
    opts = options or ImageIndexOptions()
    t0 = time.monotonic()
    summary = ShardSummary()
    run = ShardRun(index, opts, summary)
    todo = run.record_missing(run.todo(found))
    prep = run.writer.model().prep if todo else None
    code = run.codes is not None

    def chunks() -> Iterator[SampleChunk]:
        for sh in todo:
            batch: list[tuple[str, bytes]] = []
            for item, data in run.samples(sh):
                batch.append((item.path, data))
                if len(batch) >= opts.chunk:
                    yield SampleChunk(sh.path, tuple(batch), prep, False, code)
                    batch = []
            yield SampleChunk(sh.path, tuple(batch), prep, True, code)

    by_path = {sh.path: sh for sh in todo}
    pending: list[tuple[Item, Decoded]] = []
    workers = default_workers() if opts.workers is None else opts.workers
    done = 0
    for out in ordered_map(_with_task, chunks(), workers):
        if isinstance(out, WorkerCrash):  # the decoder process died: its samples are failures, not a stop
            task, results = out.task, [Failure(p, "decode", out.reason) for p, _ in out.task.samples]
        else:
            task, results = out
        for res in results:
            item = run.items[res.path]
            if isinstance(res, Failure):
                run.fail(Failure.of(item, res.stage, res.reason))
            else:
                pending.append((item, res))
                if len(pending) >= opts.batch_size:
                    _encode(run, pending)
        if task.last:
            _encode(run, pending)
            run.finish(by_path[task.shard])
            done += 1
            if on_progress is not None:
                on_progress(Progress(SHARDS, done, len(todo), {"added": summary.added + summary.updated,
                                                               "errors": summary.errors}, time.monotonic() - t0))
    if opts.optimize and (summary.added or summary.updated):
        refresh_search(index, TABLE)
    summary.elapsed = time.monotonic() - t0
    summary.images_per_s = (summary.added + summary.updated) / summary.elapsed if summary.elapsed > 0 else 0.0
    return summary


def _with_task(task: SampleChunk) -> tuple[SampleChunk, list]:
    """Worker: the task (without its bytes) and its results, so a chunk's shard travels with them."""
    try:
        out = _decode_chunk(task)
    except BaseException as exc:  # noqa: BLE001 - reported per sample, never a stopped run
        out = [Failure(p, "decode", f"{type(exc).__name__}: {exc}") for p, _ in task.samples]
    return SampleChunk(task.shard, tuple((p, b"") for p, _ in task.samples), task.prep, task.last, task.code), out


def _encode(run: ShardRun, pending: list[tuple[Item, Decoded]]) -> None:
    if not pending:
        return
    vecs = run.writer.model().encode_prepared(np.stack([d.pixels for _, d in pending]))
    run.emit([Embedded(it, d.hash, d.width, d.height, v, d.codes) for (it, d), v in zip(pending, vecs)])
    pending.clear()

"""The video indexer: sources -> streamed decode + frame sampling (worker processes) -> encode (batches) -> commit.

Two tables: ``frames`` (one row per sampled frame: video_id, path, frame_index, t in seconds, vector) and
``videos`` (one row per video: id = the frames' video_id, path, duration, fps, n_frames = sampled frames, width,
height, bytes, mtime, hash, sampling, partial, caption, vector = norm(mean of its frame vectors)).

Frames of many videos are batched together into the encoder; a video is never held whole (frames arrive from the
workers in small pieces and leave as rows once embedded; only a running sum is kept for the pooled vector).

Commit order makes a video atomic: its frames are committed before its ``videos`` row, and a video is done only
when that row exists. After a crash, frames whose video has no row are orphans, deleted at the start of the next
run, and the video is indexed again. A changed file (path + mtime + size, or a different ``sampling``) is indexed
again and its old row and frames are deleted once the new row is committed; two rows for one path (a crash in
between) are repaired at start, the newest wins.

Failures go to the ``errors`` table (``source_table = "videos"``, stage read / decode): empty files, files that are
not videos, audio-only files, unsupported codecs. A video that fails **mid-stream** (a decoder error, or a stream
ending well before its stated duration) **keeps the frames decoded before the failure**: its row gets
``partial = true`` and the failure is recorded in ``errors`` too. Like other errors, a partial video is not tried
again until the file changes (or ``retry_errors``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa

from indexers.common import (
    Failure,
    error_table,
    finish_run,
    gone_from_sources,
    newest_per_path,
    per_second,
    recorded_errors,
    scan_tuples,
)
from indexers.video_decode import SamplingPlan, import_av, stream_decode
from indexers.video_rows import video_outcome
from retrieval.index.directory import Index
from retrieval.index.schemas import base_fields
from retrieval.io.files import fs_path, stored_path
from retrieval.io.sources import Discovery, Item
from retrieval.io.workers import Committer, Progress, default_workers, plan_work
from retrieval.store.base import vectors_to_arrow

log = logging.getLogger(__name__)
VIDEOS, FRAMES = "videos", "frames"


@dataclass
class VideoIndexOptions:
    sampling: SamplingPlan = field(default_factory=SamplingPlan)  # --fps 1 unless told otherwise
    batch_size: int = 64          # frames per forward pass (from any number of videos)
    workers: int | None = None    # decoding processes; 0 decodes in this process; None: one per spare core
    piece: int = 16               # frames per message from a worker
    prune: bool = False           # delete videos that are gone from the sources
    retry_errors: bool = False    # retry failed and partial videos even if unchanged
    commit_rows: int = 2048       # frame rows per commit
    commit_seconds: float = 15.0
    optimize: bool = True


@dataclass
class VideoIndexSummary:
    added: int = 0
    updated: int = 0       # changed videos indexed again
    unchanged: int = 0
    removed: int = 0
    errors: int = 0        # new errors this run (partial videos included)
    partial: int = 0       # videos kept with the frames decoded before a mid-stream failure
    known_errors: int = 0  # videos skipped because they failed before and did not change
    frames: int = 0        # frames embedded this run
    elapsed: float = 0.0
    frames_per_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


class _State:
    """What the index holds for videos: rows by path, errors by path, and what an interrupted run left behind."""

    def __init__(self, index: Index):
        self.rows: dict[str, tuple] = {}     # path -> (id, mtime, bytes, sampling, partial)
        self.duplicates: list[int] = []      # older videos rows of a path
        self.orphans: list[int] = []         # frame ids whose video has no (kept) row
        store = index.store
        if store.has_table(VIDEOS):
            cols = ["id", "path", "mtime", "bytes", "sampling", "partial"]
            self.rows, self.duplicates = newest_per_path(scan_tuples(store, VIDEOS, cols))
        self.errors = recorded_errors(store, VIDEOS)  # path -> (id, mtime, bytes)
        if store.has_table(FRAMES):
            live = np.fromiter((r[0] for r in self.rows.values()), np.int64)
            for b in store.scan(FRAMES, ["id", "video_id"]):
                vid = b.column(1).to_numpy(zero_copy_only=False)
                lost = ~np.isin(vid, live)
                if lost.any():
                    self.orphans.extend(b.column(0).to_numpy()[lost].tolist())


def delete_videos(index: Index, video_ids) -> int:
    """Delete videos rows and all their frames; returns the number of videos rows deleted."""
    ids = sorted({int(v) for v in video_ids})
    if not ids:
        return 0
    frame_ids = []
    for i in range(0, len(ids), 4096):
        where = f"video_id IN ({','.join(map(str, ids[i:i + 4096]))})"
        for b in index.store.scan(FRAMES, ["id"], where=where):
            frame_ids.extend(b.column(0).to_pylist())
    if frame_ids:
        index.delete(FRAMES, frame_ids)
    return index.delete(VIDEOS, ids)


@dataclass
class VideoPlan:
    """What a run does, decided before any video is read: the tables' schemas, what the index holds, the videos to
    read, the stored rows they replace (path -> id), the failures known now and the error rows made stale."""

    vschema: pa.Schema
    fschema: pa.Schema
    state: _State
    todo: list[Item]
    replaced: dict[str, int]
    errs: list[tuple]
    stale_errors: list[int]


def plan_videos(index: Index, found: Discovery, opts: VideoIndexOptions, summary: VideoIndexSummary) -> VideoPlan:
    """The tables made, what an interrupted run left repaired (duplicate rows, orphan frames), and the plan
    (unchanged and known-bad videos counted in ``summary``)."""
    vschema = index.ensure_table(VIDEOS, [pa.field(c, pa.string()) for c in found.meta_columns])
    fschema = index.ensure_table(FRAMES)
    index.ensure_table("errors")
    state = _State(index)
    if state.duplicates:
        delete_videos(index, state.duplicates)
        log.info("removed %d video rows left duplicated by an interrupted run", len(state.duplicates))
    if state.orphans:
        index.delete(FRAMES, state.orphans)
        log.info("removed %d frames of videos an interrupted run did not finish", len(state.orphans))
    sampling = opts.sampling.describe()

    def current(item, old) -> bool:  # partial videos are tried again only with retry_errors
        same = old[1] == item.mtime and old[2] == item.bytes and old[3] == sampling
        return same and not (old[4] and opts.retry_errors)

    # a partial video has both a row and an error: its recorded failure alone does not make it skippable
    plan = plan_work(found.items, state.rows, state.errors, opts.retry_errors, current,
                     skip_known=lambda item: item.path not in state.rows)
    summary.unchanged, summary.known_errors = plan.unchanged, plan.known_errors
    return VideoPlan(vschema, fschema, state, plan.todo, plan.replaced, plan.errs, plan.stale_errors)


def finish_videos(index: Index, found: Discovery, opts: VideoIndexOptions, summary: VideoIndexSummary,
                  planned: VideoPlan, ok_paths: set[str], failed_paths: list[str], t0: float) -> None:
    """The end of a run: changed files that now fail entirely lose their old rows, stale error rows go, --prune
    removes videos gone from the sources; then the search structures and the summary's rates."""
    failed = [planned.replaced[p] for p in failed_paths if p in planned.replaced]
    if failed:  # changed files that now fail entirely: their old rows describe a file that is gone
        delete_videos(index, failed)
    if planned.stale_errors:
        index.delete("errors", planned.stale_errors)
    if opts.prune:
        gone, gone_err = gone_from_sources(found, planned.state.rows, planned.state.errors, ok_paths)
        summary.removed += delete_videos(index, gone)
        if gone_err:
            index.delete("errors", gone_err)
    changed = bool(summary.added or summary.updated or summary.removed)
    summary.elapsed = finish_run(index, (FRAMES, VIDEOS), changed, opts.optimize, t0)
    summary.frames_per_s = per_second(summary.frames, summary.elapsed)


def index_videos(index: Index, found: Discovery, options: VideoIndexOptions | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> VideoIndexSummary:
    """Bring the ``frames`` and ``videos`` tables of ``index`` up to date with the files in ``found``."""
    opts = options or VideoIndexOptions()
    import_av()  # fail early, naming the extra, when PyAV is missing
    t0 = time.monotonic()
    summary = VideoIndexSummary()
    planned = plan_videos(index, found, opts, summary)
    todo, replaced, errs = planned.todo, planned.replaced, planned.errs
    ok_paths: set[str] = set()
    failed_paths: list[str] = []

    frames_out = Committer(index.add_rows, opts.commit_rows, opts.commit_seconds)

    def add_after_frames(table: str, rows: pa.Table) -> None:
        frames_out.commit()  # a video's frames always reach the store before its row
        index.add_rows(table, rows)

    def after_commit(table: str, rows: pa.Table) -> None:
        if table != VIDEOS:
            return
        paths = [fs_path(p) for p in rows.column("path").to_pylist()]
        delete_videos(index, [replaced[p] for p in paths if p in replaced])
        ok_paths.update(paths)

    videos_out = Committer(add_after_frames, max(1, opts.commit_rows // 32), opts.commit_seconds, after_commit)
    if errs:
        videos_out.put("errors", error_table(index, VIDEOS, [Failure.of(it, st, r) for it, st, r in errs]))
        summary.errors += len(errs)
    if todo:
        run = _Run(_Sinks(index, planned.vschema, planned.fschema, frames_out, videos_out, summary, replaced), todo,
                   opts, on_progress, t0)
        run.go()
        failed_paths = run.failed
    frames_out.commit()
    videos_out.commit()
    finish_videos(index, found, opts, summary, planned, ok_paths, failed_paths, t0)
    return summary


class _Acc:
    """One video in flight: its info, how many of its frames await the encoder, the running sum of its vectors."""

    def __init__(self, item: Item):
        self.item = item
        self.info = None
        self.n = 0
        self.pending = 0
        self.sum = None
        self.last_t = 0.0
        self.ended = False
        self.error = None


@dataclass
class _Sinks:
    """Where a run's rows go: the index with the two tables' schemas, the frames and videos committers (frames
    always land first), the summary that counts them, and the stored rows that re-indexed files replace."""

    index: Index
    vschema: pa.Schema
    fschema: pa.Schema
    frames_out: Committer
    videos_out: Committer
    summary: VideoIndexSummary
    replaced: dict[str, int]


class _Run:
    """Decode messages in, frame rows and video rows out; frames of many videos share each forward pass."""

    def __init__(self, sinks: _Sinks, todo: list[Item], opts: VideoIndexOptions,
                 on_progress: Callable[[Progress], None] | None, t0: float):
        index = sinks.index
        self.index, self.todo, self.opts, self.on_progress, self.t0 = index, todo, opts, on_progress, t0
        self.vschema, self.fschema = sinks.vschema, sinks.fschema
        self.frames_out, self.videos_out = sinks.frames_out, sinks.videos_out
        self.summary, self.replaced = sinks.summary, sinks.replaced
        self.encoder = index.encoder()
        base = {f.name for f in base_fields(VIDEOS, index.dim)}
        self.meta_cols = [f.name for f in sinks.vschema if f.name not in base]
        ids = index.next_ids(VIDEOS, len(todo))
        self.accs = {int(v): _Acc(it) for v, it in zip(ids, todo)}
        self.pixels: list[np.ndarray] = []
        self.refs: list[tuple[int, int, float]] = []  # (video id, frame index, t) of each pending pixel array
        self.done = 0
        self.failed: list[str] = []

    def go(self) -> None:
        workers = default_workers() if self.opts.workers is None else self.opts.workers
        jobs = [(vid, acc.item.path) for vid, acc in self.accs.items()]
        for vid, msg in stream_decode(jobs, self.opts.sampling, self.encoder.prep, workers, self.opts.piece):
            acc = self.accs[vid]
            if msg[0] == "info":
                acc.info = msg[1]
            elif msg[0] == "frames":
                for i, t, px in zip(msg[1], msg[2], msg[3]):
                    self.pixels.append(px)
                    self.refs.append((vid, int(i), float(t)))
                    acc.pending += 1
                while len(self.pixels) >= self.opts.batch_size:
                    self._encode(self.opts.batch_size)
            elif msg[0] == "end":
                acc.ended, acc.error = True, msg[1]
                if acc.pending == 0:
                    self._finish(vid)
        while self.pixels:
            self._encode(self.opts.batch_size)

    def _encode(self, n: int) -> None:
        px, refs = self.pixels[:n], self.refs[:n]
        del self.pixels[:n], self.refs[:n]
        vecs = self.encoder.encode_prepared(np.stack(px))
        self.summary.frames += len(refs)
        vids = np.array([r[0] for r in refs], np.int64)
        self.frames_out.put(FRAMES, pa.table({
            "id": self.index.next_ids(FRAMES, len(refs)), "video_id": vids,
            "path": [stored_path(self.accs[v].item.path) for v in vids.tolist()], "frame_index": [r[1] for r in refs],
            "t": [r[2] for r in refs], "vector": vectors_to_arrow(vecs, self.index.dim)}, schema=self.fschema))
        finished = []
        for (vid, _, t), v in zip(refs, vecs):
            acc = self.accs[vid]
            acc.sum = v.astype(np.float64) if acc.sum is None else acc.sum + v
            acc.n += 1
            acc.last_t = max(acc.last_t, t)
            acc.pending -= 1
            if acc.pending == 0 and acc.ended:
                finished.append(vid)
        for vid in finished:
            self._finish(vid)

    def _finish(self, vid: int) -> None:
        acc = self.accs.pop(vid)
        s = self.summary
        self.done += 1
        row, failures = video_outcome(self.vschema, self.index.dim, self.meta_cols, self.opts.sampling.describe(),
                                      vid, acc.item, acc.info, acc.n, acc.sum, acc.last_t, acc.error)
        if failures:
            self.videos_out.put("errors", error_table(self.index, VIDEOS, failures))
            s.errors += len(failures)
        if row is None:
            self.failed.append(acc.item.path)
        else:
            s.partial += bool(failures)
            self.videos_out.put(VIDEOS, row)
            if acc.item.path in self.replaced:
                s.updated += 1
            else:
                s.added += 1
        if self.on_progress is not None:
            self.on_progress(Progress(VIDEOS, self.done, len(self.todo),
                                      {"frames": s.frames, "errors": s.errors}, time.monotonic() - self.t0))

"""The image indexer: sources -> decode + preprocess (worker processes) -> encode (batches) -> commit (blocks).

Incremental: a file whose path, mtime and size match a stored row is skipped; a new file whose content hash
matches a stored row reuses that row's vector instead of being encoded; a changed file is re-embedded and its old
row deleted once the new one is committed. Resumable: rows are committed in blocks, each atomic, so after a
``kill -9`` a re-run embeds only what was not committed; a crash between committing a replacement and deleting
the row it replaces is repaired at the start of the next run (the newest row per path wins).
Bad files are recorded in the ``errors`` table and skipped on later runs until they change (or ``retry_errors``);
so are paths that are no regular file (a FIFO, a device), which are never opened. A file name that is not UTF-8
is stored escaped (``retrieval.io.files.stored_path``; ``fs_path`` gives the name back).
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
from indexers.probe_rows import Codes, CodeShards, chain, coding_available, decode_with_codes
from retrieval.encode.text import encode_long_texts
from retrieval.index.directory import Index
from retrieval.index.schemas import base_fields
from retrieval.io.files import fs_path, stored_path
from retrieval.io.imageprep import MAX_BYTES, ImagePrep, ImageReadError, content_hash, read_image_file
from retrieval.io.sources import Discovery, Item
from retrieval.io.workers import Committer, Progress, WorkerCrash, default_workers, ordered_map, plan_work
from retrieval.store.base import vectors_to_arrow

log = logging.getLogger(__name__)
TABLE = "images"


@dataclass
class ImageIndexOptions:
    batch_size: int = 64          # images per forward pass
    workers: int | None = None    # decoding processes; 0 decodes in this process; None: one per spare core
    chunk: int = 8                # images per worker task
    prune: bool = False           # delete rows of files that are gone from the sources
    retry_errors: bool = False    # retry files recorded as bad even if unchanged
    commit_rows: int = 2048       # rows per commit (a crash loses at most this many)
    commit_seconds: float = 15.0
    max_bytes: int = MAX_BYTES    # larger files are recorded as errors
    optimize: bool = True         # compact and build the ANN index at the end when the table is large
    probe_codes: bool = True      # keep perceptual-hash codes for `clipdex dedup` (needs the dedup extra)


@dataclass
class IndexSummary:
    added: int = 0
    reused: int = 0        # new or moved files whose vector was reused by content hash
    unchanged: int = 0
    updated: int = 0       # changed files re-embedded
    removed: int = 0
    errors: int = 0        # new errors this run
    known_errors: int = 0  # files skipped because they failed before and did not change
    long_captions: int = 0  # captions past the text context, chunk-pooled (never truncated)
    elapsed: float = 0.0
    images_per_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DecodeTask:
    """A worker's share: files (with the hashes of stored files of the same size, whose vectors can be reused
    instead of decoding), the model's input geometry and the size limit."""

    files: tuple[tuple[str, frozenset], ...]
    prep: ImagePrep
    max_bytes: int
    code: bool = False    # take probe codes too (``indexers.probe_rows``)


@dataclass
class Decoded:
    """A worker's result for one file: ``pixels`` (H, W, 3) uint8, or None when ``hash`` matched a stored file."""

    path: str
    hash: str
    pixels: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    codes: Codes | None = None   # probe codes for dedup (``indexers.probe_rows``)


@dataclass
class Embedded:
    """One image ready to become a row."""

    item: Item
    hash: str
    width: int | None
    height: int | None
    vector: np.ndarray
    codes: Codes | None = None


def _decode_file(path: str, check_hashes: frozenset, prep: ImagePrep, max_bytes: int,
                 code: bool = False) -> Decoded | Failure:
    try:
        if check_hashes:
            data = read_image_file(path, max_bytes)
            digest = content_hash(data)
            if digest in check_hashes:
                return Decoded(path, digest)
        pixels, digest, w, h, codes = decode_with_codes(read_image_file(path, max_bytes), prep, code)
        return Decoded(path, digest, pixels, w, h, codes)
    except ImageReadError as exc:
        return Failure(path, exc.stage, exc.reason)
    except OSError as exc:
        return Failure(path, "read", f"unreadable: {exc}")
    except Exception as exc:  # a decoder bug must not stop the run
        return Failure(path, "decode", f"{type(exc).__name__}: {exc}")


def _decode_chunk(task: DecodeTask) -> list[Decoded | Failure]:
    """Worker: decode (or recognise by hash) each file of the task; failures come back as ``Failure``."""
    return [_decode_file(path, hashes, task.prep, task.max_bytes, task.code) for path, hashes in task.files]


class StoredImages:
    """What the index already holds for images: rows by path, hashes, and recorded errors."""

    def __init__(self, index: Index):
        self.rows: dict[str, tuple[int, float, int, str]] = {}   # path -> (id, mtime, bytes, hash)
        self.duplicates: list[int] = []
        self.by_hash: dict[str, int] = {}
        self.size_hashes: dict[int, set] = {}
        store = index.store
        if store.has_table(TABLE):
            self.rows, self.duplicates = newest_per_path(scan_tuples(store, TABLE, ["id", "path", "mtime", "bytes",
                                                                                    "hash"]))
            for i, _mtime, s, h in self.rows.values():
                if h:
                    self.by_hash.setdefault(h, i)
                    self.size_hashes.setdefault(s, set()).add(h)
        self.errors = recorded_errors(store, TABLE, legacy_untagged=True)  # path -> (id, mtime, bytes)

    def drop_duplicates(self, index: Index) -> None:
        """Delete the older rows of paths stored twice (what a crash mid-replacement leaves)."""
        if self.duplicates:
            index.delete(TABLE, self.duplicates)
            log.info("removed %d rows left duplicated by an interrupted run", len(self.duplicates))
            self.duplicates = []


def replace_after_commit(index: Index, replaced: dict[str, int], ok_paths: set[str]):
    """The committer's hook: once new ``images`` rows are committed, delete the rows they replace (``replaced``:
    path -> old id) and note their paths in ``ok_paths``."""

    def after_commit(table: str, rows: pa.Table) -> None:
        if table != TABLE:
            return
        paths = [fs_path(p) for p in rows.column("path").to_pylist()]
        gone = [replaced[p] for p in paths if p in replaced]
        if gone:
            index.delete(TABLE, gone)
        ok_paths.update(paths)

    return after_commit


def index_images(index: Index, found: Discovery, options: ImageIndexOptions | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> IndexSummary:
    """Bring the ``images`` table of ``index`` up to date with the files in ``found``; returns the run's summary."""
    opts = options or ImageIndexOptions()
    t0 = time.monotonic()
    summary = IndexSummary()
    schema = index.ensure_table(TABLE, [pa.field(c, pa.string()) for c in found.meta_columns])
    index.ensure_table("errors")
    state = StoredImages(index)
    state.drop_duplicates(index)

    plan = plan_work(found.items, state.rows, state.errors, opts.retry_errors,
                     current=lambda item, old: old[1] == item.mtime and old[2] == item.bytes)
    summary.unchanged, summary.known_errors = plan.unchanged, plan.known_errors
    ok_paths: set[str] = set()
    shards = CodeShards(index.path) if opts.probe_codes and coding_available() else None
    committer = Committer(index.add_rows, opts.commit_rows, opts.commit_seconds,
                          chain(replace_after_commit(index, plan.replaced, ok_paths), shards and shards.after_commit))
    writer = ImageRowWriter(index, schema, committer, summary, plan.replaced, shards)
    writer.fail([Failure.of(it, stage, reason) for it, stage, reason in plan.errs])
    if plan.todo:
        _embed(writer, state, plan.todo, opts, on_progress, t0)
    committer.commit()
    if plan.stale_errors:
        # errors of files that now indexed fine (or failed anew: their new error row replaces the old one)
        index.delete("errors", plan.stale_errors)
    if opts.prune:
        _prune(index, found, state, ok_paths, summary)
    changed = bool(summary.added or summary.removed or summary.updated or summary.reused)
    summary.elapsed = finish_run(index, (TABLE,), changed, opts.optimize, t0)
    summary.images_per_s = per_second(summary.added + summary.updated, summary.elapsed)
    return summary


def _prune(index: Index, found: Discovery, state: StoredImages, ok_paths: set[str], summary: IndexSummary) -> None:
    """Delete the rows and error rows of files gone from the sources."""
    gone, gone_err = gone_from_sources(found, state.rows, state.errors, ok_paths)
    if gone:
        summary.removed += index.delete(TABLE, gone)
    if gone_err:
        index.delete("errors", gone_err)


@dataclass
class ImageRowWriter:
    """Turns embedded images into ``images`` rows (captions embedded) and failures into ``errors`` rows, hands them
    to the committer and counts them in the summary."""

    index: Index
    schema: pa.Schema
    committer: Committer
    summary: IndexSummary
    replaced: dict[str, int]
    shards: CodeShards | None = None   # probe codes of the rows emitted, written once they are committed

    def __post_init__(self):
        base = {f.name for f in base_fields(TABLE, self.index.dim)}
        self.meta_cols = [f.name for f in self.schema if f.name not in base]

    def use_schema(self, schema: pa.Schema) -> None:
        """Write rows with ``schema`` from now on (the table gained metadata columns)."""
        self.schema = schema
        self.__post_init__()

    def model(self):
        """The index's encoder (loaded once, by the index)."""
        return self.index.encoder()

    def fail(self, failures: list[Failure]) -> None:
        if failures:
            self.committer.put("errors", error_table(self.index, TABLE, failures))
            self.summary.errors += len(failures)

    def emit(self, rows: list[Embedded], reused: bool = False, text_vectors: pa.Array | None = None) -> None:
        """Rows for ``rows``; ``text_vectors``: their caption vectors when already embedded (the Ray engine)."""
        if not rows:
            return
        n, dim = len(rows), self.index.dim
        items = [r.item for r in rows]
        captions = [it.caption for it in items]
        ids = self.index.next_ids(TABLE, n)
        if self.shards is not None:
            self.shards.hold(ids, [r.hash for r in rows], [r.codes for r in rows])
        cols = {"id": pa.array(ids), "path": [stored_path(it.path) for it in items],
                "width": [r.width for r in rows], "height": [r.height for r in rows],
                "bytes": [it.bytes for it in items], "mtime": [it.mtime for it in items],
                "hash": [r.hash for r in rows], "caption": captions, "label": [it.label for it in items],
                "vector": vectors_to_arrow(np.stack([r.vector for r in rows]).astype(np.float32), dim),
                "text_vector": self._caption_vectors(captions) if text_vectors is None else text_vectors}
        for c in self.meta_cols:
            cols[c] = [it.meta.get(c) for it in items]
        self.committer.put(TABLE, pa.table(cols, schema=self.schema))
        n_updated = sum(1 for it in items if it.path in self.replaced)
        if reused:
            self.summary.reused += n
        else:
            self.summary.updated += n_updated
            self.summary.added += n - n_updated

    def _caption_vectors(self, captions: list[str | None]) -> pa.Array:
        """Caption embeddings (chunk-pooled when long), null where an image has no caption."""
        n, dim = len(captions), self.index.dim
        with_caption = [i for i, c in enumerate(captions) if c]
        if not with_caption:
            return pa.nulls(n, self.schema.field("text_vector").type)
        enc = encode_long_texts(self.model(), [captions[i] for i in with_caption])
        self.summary.long_captions += int((enc.n_chunks > 1).sum())
        full = np.zeros((n, dim), np.float32)
        full[with_caption] = enc.vectors
        mask = np.ones(n, bool)
        mask[with_caption] = False
        return pa.FixedSizeListArray.from_arrays(pa.array(full.reshape(-1)), dim, mask=pa.array(mask))


@dataclass
class _Pending:
    """Images between the workers and the writer: decoded pixels awaiting the encoder, and files whose content
    matched a stored row awaiting that row's vector."""

    to_encode: list[tuple[Item, Decoded]] = field(default_factory=list)
    to_reuse: list[tuple[Item, Decoded]] = field(default_factory=list)


def _encode_pending(writer: ImageRowWriter, pending: _Pending) -> None:
    if not pending.to_encode:
        return
    vecs = writer.model().encode_prepared(np.stack([d.pixels for _, d in pending.to_encode]))
    writer.emit([Embedded(it, d.hash, d.width, d.height, v, d.codes) for (it, d), v in zip(pending.to_encode, vecs)])
    pending.to_encode.clear()


def _reuse_pending(writer: ImageRowWriter, state: StoredImages, pending: _Pending, opts: ImageIndexOptions) -> None:
    """Copy the stored vectors of files recognised by content hash; a row replaced during this run meanwhile
    sends its file back to be decoded and encoded after all."""
    if not pending.to_reuse:
        return
    index = writer.index
    stored = index.store.take(TABLE, [state.by_hash[d.hash] for _, d in pending.to_reuse],
                              ["id", "vector", "width", "height"])
    pos = {i: r for r, i in enumerate(stored.column("id").to_pylist())}
    vec = np.asarray(stored.column("vector").combine_chunks().flatten().to_numpy(), np.float32).reshape(-1, index.dim)
    widths, heights = stored.column("width").to_pylist(), stored.column("height").to_pylist()
    rows = []
    for it, d in pending.to_reuse:
        r = pos.get(state.by_hash[d.hash])
        if r is not None:
            rows.append(Embedded(it, d.hash, widths[r], heights[r], vec[r]))
            continue
        again = _decode_file(it.path, frozenset(), writer.model().prep, opts.max_bytes, writer.shards is not None)
        if isinstance(again, Failure):
            writer.fail([Failure.of(it, again.stage, again.reason)])
        else:
            pending.to_encode.append((it, again))
    writer.emit(rows, reused=True)
    pending.to_reuse.clear()
    if len(pending.to_encode) >= opts.batch_size:
        _encode_pending(writer, pending)


def _embed(writer: ImageRowWriter, state: StoredImages, todo: list[Item], opts: ImageIndexOptions,
           on_progress: Callable[[Progress], None] | None, t0: float) -> None:
    """Decode ``todo`` in worker processes and write each image as it comes, batched for the encoder."""
    by_path = {it.path: it for it in todo}
    prep = writer.model().prep
    tasks = [DecodeTask(tuple((it.path, frozenset(state.size_hashes.get(it.bytes, ())))
                              for it in todo[i:i + opts.chunk]), prep, opts.max_bytes, writer.shards is not None)
             for i in range(0, len(todo), opts.chunk)]
    workers = default_workers() if opts.workers is None else opts.workers
    pending = _Pending()
    done = 0
    for results in ordered_map(_decode_chunk, tasks, workers):
        if isinstance(results, WorkerCrash):
            results = [Failure(p, "decode", results.reason) for p, _ in results.task.files]
        for res in results:
            done += 1
            item = by_path[res.path]
            if isinstance(res, Failure):
                writer.fail([Failure.of(item, res.stage, res.reason)])
            elif res.pixels is None:
                pending.to_reuse.append((item, res))
                if len(pending.to_reuse) >= opts.batch_size:
                    _reuse_pending(writer, state, pending, opts)
            else:
                pending.to_encode.append((item, res))
                if len(pending.to_encode) >= opts.batch_size:
                    _encode_pending(writer, pending)
        if on_progress is not None:
            s = writer.summary
            on_progress(Progress(TABLE, done, len(todo), {"added": s.added + s.updated, "reused": s.reused,
                                                          "errors": s.errors}, time.monotonic() - t0))
    _reuse_pending(writer, state, pending, opts)
    _encode_pending(writer, pending)

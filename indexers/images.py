"""The image indexer: sources -> decode + preprocess (worker processes) -> encode (batches) -> commit (blocks).

Incremental: a file whose path, mtime and size match a stored row is skipped; a new file whose content hash
matches a stored row reuses that row's vector instead of being encoded; a changed file is re-embedded and its old
row deleted once the new one is committed. Resumable: rows are committed in blocks, each atomic, so after a
``kill -9`` a re-run embeds only what was not committed; a crash between committing a replacement and deleting
the row it replaces is repaired at the start of the next run (the newest row per path wins).
Bad files are recorded in the ``errors`` table and skipped on later runs until they change (or ``retry_errors``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from retrieval.io.imageprep import ImagePrep, ImageReadError, read_and_prepare
from retrieval.index.directory import Index, now
from retrieval.store.base import vectors_to_arrow

from retrieval.io.workers import Committer, Progress, WorkerCrash, default_workers, ordered_map, plan_work
from retrieval.io.sources import Discovery, Item, under_roots

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
    max_bytes: int = 256 << 20    # larger files are recorded as errors
    optimize: bool = True         # compact and build the ANN index at the end when the table is large


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


def _decode_chunk(task):
    """Worker: [(path, check_hashes)], prep, max_bytes -> [("ok", path, pixels, hash, w, h) | ("dup", path, hash,
    w, h) | ("err", path, stage, reason)]. ``check_hashes``: hashes of stored files of the same size, whose
    vectors can be reused (the pixels are then not needed)."""
    items, prep, max_bytes = task
    out = []
    for path, check_hashes in items:
        try:
            if check_hashes:
                from retrieval.io.imageprep import content_hash

                with open(path, "rb") as f:
                    digest = content_hash(f.read())
                if digest in check_hashes:
                    out.append(("dup", path, digest, None, None))
                    continue
            pixels, digest, w, h = read_and_prepare(path, prep, max_bytes)
            out.append(("ok", path, pixels, digest, w, h))
        except ImageReadError as exc:
            out.append(("err", path, exc.stage, exc.reason))
        except OSError as exc:
            out.append(("err", path, "read", f"unreadable: {exc}"))
        except Exception as exc:  # a decoder bug must not stop the run
            out.append(("err", path, "decode", f"{type(exc).__name__}: {exc}"))
    return out


class _State:
    """What the index already holds for images: rows by path, hashes, and recorded errors."""

    def __init__(self, index: Index):
        self.rows: dict[str, tuple[int, float, int, str]] = {}   # path -> (id, mtime, bytes, hash)
        self.by_hash: dict[str, int] = {}
        self.size_hashes: dict[int, set] = {}
        self.errors: dict[str, tuple[int, float, int]] = {}      # path -> (id, mtime, bytes)
        self.duplicates: list[int] = []
        store = index.store
        if store.has_table(TABLE):
            for b in store.scan(TABLE, ["id", "path", "mtime", "bytes", "hash"]):
                for i, p, m, s, h in zip(*(b.column(c).to_pylist() for c in range(5))):
                    old = self.rows.get(p)
                    if old is not None:  # a crash left two rows for a path: the newest wins
                        self.duplicates.append(min(old[0], i))
                        if old[0] > i:
                            continue
                    self.rows[p] = (i, m, s, h)
            for i, m, s, h in self.rows.values():
                if h:
                    self.by_hash.setdefault(h, i)
                    self.size_hashes.setdefault(s, set()).add(h)
        if store.has_table("errors"):
            for b in store.scan("errors", ["id", "path", "mtime", "bytes", "source_table"]):
                for i, p, m, s, t in zip(*(b.column(c).to_pylist() for c in range(5))):
                    if t in (TABLE, None):
                        self.errors[p] = (i, m, s)


def _error_rows(index: Index, errs: list[tuple[Item, str, str]]) -> pa.Table:
    schema = index.store.schema("errors")
    ids = index.next_ids("errors", len(errs))
    when = now()
    return pa.table({"id": ids, "path": [e[0].path for e in errs], "stage": [e[1] for e in errs],
                     "reason": [e[2] for e in errs], "when": [when] * len(errs),
                     "bytes": [e[0].bytes for e in errs], "mtime": [e[0].mtime for e in errs],
                     "source_table": [TABLE] * len(errs)}, schema=schema)


def index_images(index: Index, found: Discovery, options: ImageIndexOptions | None = None,
                 on_progress: Callable[[Progress], None] | None = None) -> IndexSummary:
    """Bring the ``images`` table of ``index`` up to date with the files in ``found``; returns the run's summary."""
    opts = options or ImageIndexOptions()
    t0 = time.monotonic()
    summary = IndexSummary()
    extra = [pa.field(c, pa.string()) for c in found.meta_columns]
    schema = index.ensure_table(TABLE, extra)
    index.ensure_table("errors")
    state = _State(index)
    if state.duplicates:
        index.delete(TABLE, state.duplicates)
        log.info("removed %d rows left duplicated by an interrupted run", len(state.duplicates))

    plan = plan_work(found.items, state.rows, state.errors, opts.retry_errors,
                     current=lambda item, old: old[1] == item.mtime and old[2] == item.bytes)
    todo, replaced, errs, stale_errors = plan.todo, plan.replaced, plan.errs, plan.stale_errors
    summary.unchanged, summary.known_errors = plan.unchanged, plan.known_errors
    ok_paths: set[str] = set()

    def after_commit(table: str, rows: pa.Table) -> None:
        if table != TABLE:
            return
        paths = rows.column("path").to_pylist()
        gone = [replaced[p] for p in paths if p in replaced]
        if gone:
            index.delete(TABLE, gone)
        ok_paths.update(paths)

    committer = Committer(index.add_rows, opts.commit_rows, opts.commit_seconds, after_commit)
    if errs:
        committer.put("errors", _error_rows(index, errs))
        summary.errors += len(errs)

    if todo:
        _run(index, todo, schema, state, opts, committer, summary, replaced, on_progress, t0)
    committer.commit()
    if stale_errors:
        # errors of files that now indexed fine (or failed anew: their new error row replaces the old one)
        index.delete("errors", stale_errors)

    if opts.prune:
        seen = {it.path for it in found.items if it.bytes is not None}
        gone = [rid for p, (rid, *_rest) in state.rows.items()
                if p not in seen and under_roots(p, found.roots) and p not in ok_paths]
        if gone:
            summary.removed += index.delete(TABLE, gone)
        gone_err = [rid for p, (rid, *_rest) in state.errors.items() if p not in seen and under_roots(p, found.roots)]
        if gone_err:
            index.delete("errors", gone_err)
    if opts.optimize and (summary.added or summary.removed or summary.updated or summary.reused):
        index.optimize(TABLE)
    summary.elapsed = time.monotonic() - t0
    embedded = summary.added + summary.updated
    summary.images_per_s = embedded / summary.elapsed if summary.elapsed > 0 else 0.0
    return summary


def _run(index, todo, schema, state, opts, committer, summary, replaced, on_progress, t0):
    encoder = index.encoder()
    prep: ImagePrep = encoder.prep
    by_path = {it.path: it for it in todo}
    tasks = []
    for i in range(0, len(todo), opts.chunk):
        chunk = [(it.path, frozenset(state.size_hashes.get(it.bytes, ()))) for it in todo[i:i + opts.chunk]]
        tasks.append((chunk, prep, opts.max_bytes))
    workers = default_workers() if opts.workers is None else opts.workers
    meta_cols = [f.name for f in schema if f.name not in {"id", "path", "width", "height", "bytes", "mtime", "hash",
                                                           "caption", "label", "vector", "text_vector"}]
    pixels, ready, reuse = [], [], []
    done = 0

    def flush_batch():
        if not ready:
            return
        vecs = encoder.encode_prepared(np.stack(pixels)) if pixels else np.zeros((0, index.dim), np.float32)
        rows = [(it, h, w, hh, v) for (it, h, w, hh), v in zip(ready, vecs)]
        _emit(index, schema, meta_cols, encoder, rows, committer, summary, replaced)
        pixels.clear()
        ready.clear()

    def flush_reuse():
        if not reuse:
            return
        ids = [state.by_hash[h] for _, h in reuse]
        stored = index.store.take(TABLE, ids, ["id", "vector", "width", "height"])
        pos = {i: r for r, i in enumerate(stored.column("id").to_pylist())}
        vec = np.asarray(stored.column("vector").combine_chunks().flatten().to_numpy(), np.float32).reshape(-1, index.dim)
        rows = []
        for it, h in reuse:
            r = pos.get(state.by_hash[h])
            if r is None:  # the row it matched was replaced during this run: decode and encode after all
                try:
                    px, digest, w, hh = read_and_prepare(it.path, prep, opts.max_bytes)
                except ImageReadError as exc:
                    committer.put("errors", _error_rows(index, [(it, exc.stage, exc.reason)]))
                    summary.errors += 1
                    continue
                pixels.append(px)
                ready.append((it, digest, w, hh))
                continue
            rows.append((it, h, stored.column("width")[r].as_py(), stored.column("height")[r].as_py(), vec[r]))
        summary.reused += len(rows)
        if rows:
            _emit(index, schema, meta_cols, encoder, rows, committer, summary, replaced, reused=True)
        reuse.clear()
        if len(ready) >= opts.batch_size:
            flush_batch()

    for results in ordered_map(_decode_chunk, tasks, workers):
        if isinstance(results, WorkerCrash):
            chunk = results.task[0]
            errs = [(by_path[p], "decode", results.reason) for p, _ in chunk]
            committer.put("errors", _error_rows(index, errs))
            summary.errors += len(errs)
            done += len(chunk)
            continue
        for res in results:
            done += 1
            item = by_path[res[1]]
            if res[0] == "ok":
                pixels.append(res[2])
                ready.append((item, res[3], res[4], res[5]))
                if len(ready) >= opts.batch_size:
                    flush_batch()
            elif res[0] == "dup":
                reuse.append((item, res[2]))
                if len(reuse) >= opts.batch_size:
                    flush_reuse()
            else:
                committer.put("errors", _error_rows(index, [(item, res[2], res[3])]))
                summary.errors += 1
        if on_progress is not None:
            on_progress(Progress("images", done, len(todo), {"added": summary.added + summary.updated,
                                                             "reused": summary.reused, "errors": summary.errors},
                                 time.monotonic() - t0))
    flush_reuse()
    flush_batch()


def _emit(index, schema, meta_cols, encoder, rows, committer, summary, replaced, reused=False):
    """Turn (item, hash, width, height, vector) tuples into table rows (captions embedded) and hand them over."""
    n = len(rows)
    items = [r[0] for r in rows]
    vecs = np.stack([r[4] for r in rows]).astype(np.float32)
    captions = [it.caption for it in items]
    text_vec = pa.nulls(n, schema.field("text_vector").type)
    with_caption = [i for i, c in enumerate(captions) if c]
    if with_caption:
        from retrieval.encode.text import encode_long_texts

        enc = encode_long_texts(encoder, [captions[i] for i in with_caption])
        tv = enc.vectors
        summary.long_captions += int((enc.n_chunks > 1).sum())
        full = np.zeros((n, index.dim), np.float32)
        full[with_caption] = tv
        mask = np.zeros(n, bool)
        mask[with_caption] = True
        text_vec = pa.FixedSizeListArray.from_arrays(pa.array(full.reshape(-1)), index.dim, mask=pa.array(~mask))
    cols = {"id": pa.array(index.next_ids(TABLE, n)), "path": [it.path for it in items],
            "width": [r[2] for r in rows], "height": [r[3] for r in rows], "bytes": [it.bytes for it in items],
            "mtime": [it.mtime for it in items], "hash": [r[1] for r in rows], "caption": captions,
            "label": [it.label for it in items], "vector": vectors_to_arrow(vecs, index.dim), "text_vector": text_vec}
    for c in meta_cols:
        cols[c] = [it.meta.get(c) for it in items]
    committer.put(TABLE, pa.table(cols, schema=schema))
    n_updated = sum(1 for it in items if it.path in replaced)
    summary.updated += n_updated if not reused else 0
    summary.added += (n - n_updated) if not reused else 0

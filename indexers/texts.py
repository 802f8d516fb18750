"""The text indexer: text files and tables -> rows (streamed) -> unique texts encoded in batches -> block commits.

- Identical texts are embedded once: by text hash within the run (a bounded cache of recent vectors) and against
  the index (the stored row's vector, n_tokens and n_chunks are reused).
- Incremental per file: a file whose path, mtime and size match its stored rows is skipped; a changed file is
  read again and its old rows (and old row errors) are deleted once all its new rows are committed.
- Resumable: rows are committed in atomic blocks. Files with rows committed but not finished are listed in the
  manifest (``tables.texts.partial``); a re-run reads them again (their vectors are reused, not re-encoded) and
  then drops the rows of the interrupted attempt. Sources left with two generations of rows are repaired at the
  start (the newest generation wins), like the image indexer.
- Long texts follow ``long_text`` (chunk | longclip | truncate, ``retrieval.encode.text``); the table remembers it
  (``manifest["tables"]["texts"]["long_text"]``) and refuses another one later. The summary counts chunked,
  stretched and truncated rows; truncation also logs a warning naming the strategy.
- Undecodable files (stage decode/read) and bad rows (stage row) go to ``errors`` with source_table "texts";
  bad files are skipped on later runs until they change (or ``retry_errors``).
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from retrieval.errors import InvalidInput
from retrieval.index.directory import Index, base_fields, now
from retrieval.store.base import arrow_to_vectors, vectors_to_arrow
from retrieval.encode.text import check_strategy, encode_long_texts, long_text_counts

from retrieval.io.workers import Committer, Progress
from retrieval.io.sources import under_roots
from indexers.text_sources import SPLITS, FileError, Row, TextDiscovery, TextFile, read_rows

log = logging.getLogger(__name__)
TABLE = "texts"
ROW_STAGE = "row"


@dataclass
class TextIndexOptions:
    long_text: str = "chunk"      # chunk | longclip | truncate
    split: str = "none"           # documents: none | paragraphs | lines
    text_column: str = "text"     # tables: the column holding the text
    batch_size: int = 64          # distinct texts per encoder call
    commit_rows: int = 4096       # rows per commit (a crash loses at most this many)
    commit_seconds: float = 15.0
    prune: bool = False           # delete rows of files gone from the sources
    retry_errors: bool = False    # read files recorded as bad again even if unchanged
    max_doc_bytes: int = 32 << 20  # a larger unsplit document is an error (use split)
    cache_texts: int = 20_000     # recently embedded texts kept for deduplication within the run
    optimize: bool = True


@dataclass
class TextIndexSummary:
    long_text: str = "chunk"
    files: int = 0         # files read this run (new or changed)
    unchanged: int = 0     # files skipped: unchanged since they were indexed
    rows: int = 0          # rows written
    encoded: int = 0       # distinct texts embedded
    reused: int = 0        # rows whose vector came from an identical text (this run or the index)
    replaced: int = 0      # old rows of changed files deleted
    removed: int = 0       # rows of files gone from the sources (prune)
    errors: int = 0        # new error rows (bad files and bad rows)
    known_errors: int = 0  # files skipped because they failed before and did not change
    long: int = 0          # rows longer than CLIP's 75-token window
    chunked: int = 0       # ... pooled from several windows
    stretched: int = 0     # ... fitting one window of a stretched context
    truncated: int = 0     # ... cut to the window (long_text truncate only)
    elapsed: float = 0.0
    texts_per_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _source_ids(store, source: str, below: int | None = None) -> list[int]:
    """Ids of the rows of one source (with id < below)."""
    cond = None if ";" in source else f"source = '{source.replace(chr(39), chr(39) * 2)}'"
    out = []
    for b in store.scan(TABLE, ["id", "source"], where=cond):
        for i, s in zip(b.column(0).to_pylist(), b.column(1).to_pylist()):
            if s == source and (below is None or i < below):
                out.append(i)
    return out


class _State:
    """What the index holds for texts: row generations per source, hashes, recorded errors."""

    def __init__(self, index: Index):
        self.gens: dict[str, dict[tuple, int]] = {}          # source -> {(mtime, bytes): newest id}
        self.by_hash: dict[str, int] = {}
        self.file_errors: dict[str, tuple[int, float, int]] = {}
        self.row_errors: dict[str, list[tuple[int, float, int]]] = {}
        store = index.store
        if store.has_table(TABLE):
            for b in store.scan(TABLE, ["id", "source", "mtime", "bytes", "hash"]):
                for i, s, m, n, h in zip(*(b.column(c).to_pylist() for c in range(5))):
                    g = self.gens.setdefault(s, {})
                    g[(m, n)] = max(g.get((m, n), -1), i)
                    if i > self.by_hash.get(h, -1):
                        self.by_hash[h] = i
        if store.has_table("errors"):
            for b in store.scan("errors", ["id", "path", "mtime", "bytes", "source_table", "stage"]):
                for i, p, m, n, t, stage in zip(*(b.column(c).to_pylist() for c in range(6))):
                    if t != TABLE:
                        continue
                    if stage == ROW_STAGE:
                        self.row_errors.setdefault(p, []).append((i, m, n))
                    else:
                        self.file_errors[p] = (i, m, n)

    def versions(self, source: str) -> set:
        return set(self.gens.get(source, {})) | {(m, n) for _, m, n in self.row_errors.get(source, [])}


def index_texts(index: Index, found: TextDiscovery, options: TextIndexOptions | None = None,
                on_progress: Callable[[Progress], None] | None = None) -> TextIndexSummary:
    """Bring the ``texts`` table of ``index`` up to date with the files in ``found``; returns the run's summary."""
    opts = options or TextIndexOptions()
    check_strategy(opts.long_text)
    if opts.split not in SPLITS:
        raise InvalidInput(f"unknown split {opts.split!r}; choose one of {', '.join(SPLITS)}")
    info = index.manifest.get("tables", {}).get(TABLE, {})
    built = info.get("long_text")
    if built and built != opts.long_text and index.store.has_table(TABLE) and index.store.count(TABLE):
        raise InvalidInput(f"the texts table of {index.path} was built with --long-text {built}; index with "
                           f"--long-text {built} or into a new index")
    t0 = time.monotonic()
    index.ensure_table(TABLE)
    index.ensure_table("errors")
    index.manifest["tables"][TABLE]["long_text"] = opts.long_text
    index.save_manifest()
    run = _Run(index, opts, TextIndexSummary(long_text=opts.long_text), on_progress, t0)
    run.repair()
    todo = []
    for f in found.files:
        known = run.state.file_errors.get(f.path)
        if known is not None and not opts.retry_errors and (known[1], known[2]) == (f.mtime, f.bytes):
            run.summary.known_errors += 1
            continue
        if f.path not in run.partial and run.state.versions(f.path) == {(f.mtime, f.bytes)}:
            run.summary.unchanged += 1
            continue
        todo.append(f)
    for n, f in enumerate(todo):
        run.read_file(f)
        run.progress(n + 1, len(todo))
    run.finish()
    if opts.prune:
        run.prune(found)
    s = run.summary
    if opts.optimize and (s.rows or s.removed or s.replaced):
        index.optimize(TABLE)
    if s.truncated:
        log.warning("%d of %d texts were longer than the %d-token window and were truncated (--long-text truncate)",
                    s.truncated, s.rows, run.window)
    s.elapsed = time.monotonic() - t0
    s.texts_per_s = s.encoded / s.elapsed if s.elapsed > 0 else 0.0
    return s


class _Run:
    def __init__(self, index: Index, opts: TextIndexOptions, summary: TextIndexSummary, on_progress, t0):
        self.index, self.opts, self.summary, self.on_progress, self.t0 = index, opts, summary, on_progress, t0
        self._encoder = None
        self.state = _State(index)
        self.schema = index.store.schema(TABLE)
        self.err_schema = index.store.schema("errors")
        self.partial: set[str] = set(index.manifest["tables"][TABLE].get("partial", []))
        self.committer = Committer(self._add, opts.commit_rows, opts.commit_seconds, self._after_commit)
        self.pending: list[tuple[TextFile, Row, str]] = []
        self.new_texts: dict[str, str] = {}
        self.err_rows: list[tuple[str, float, int, str, str]] = []
        self.cache: OrderedDict[str, tuple[np.ndarray, int, int]] = OrderedDict()
        self.emitted: Counter = Counter()
        self.committed: Counter = Counter()
        self.first_id: dict[str, int] = {}
        self.done_reading: set[str] = set()
        self.partial_dirty = False

    @property
    def encoder(self):
        """The index's encoder, loaded when the first text needs it (an up-to-date index loads no model)."""
        if self._encoder is None:
            self._encoder = self.index.encoder()
        return self._encoder

    @property
    def window(self) -> int:
        """Content tokens per window for this run's strategy (75 for CLIP; 246 when stretched)."""
        ctx = self.encoder.context_length
        return 246 if self.opts.long_text == "longclip" and ctx <= 77 else ctx - 2

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def _save_partial(self) -> None:
        self.index.manifest["tables"][TABLE]["partial"] = sorted(self.partial)
        self.index.save_manifest()
        self.partial_dirty = False

    def _sources_of(self, table: str, rows: pa.Table) -> list[str]:
        if table == TABLE:
            return rows.column("source").to_pylist()
        ok = [t == TABLE and s == ROW_STAGE for t, s in zip(rows.column("source_table").to_pylist(),
                                                              rows.column("stage").to_pylist())]
        return [p for p, k in zip(rows.column("path").to_pylist(), ok) if k]

    def _add(self, table: str, rows: pa.Table) -> None:
        new = set(self._sources_of(table, rows)) - self.partial
        if new:  # mark before the rows land: an interrupted file is read again on the next run
            self.partial |= new
            self._save_partial()
        self.index.add_rows(table, rows)

    def _after_commit(self, table: str, rows: pa.Table) -> None:
        if table == TABLE:
            for h, i in zip(rows.column("hash").to_pylist(), rows.column("id").to_pylist()):
                self.state.by_hash[h] = i
        touched = Counter(self._sources_of(table, rows))
        self.committed.update(touched)
        for source in touched:
            self._maybe_finalize(source)
        if self.partial_dirty:
            self._save_partial()

    def _maybe_finalize(self, source: str) -> None:
        """All rows of a file read to its end are committed: drop what they replace."""
        if source not in self.done_reading or self.committed[source] != self.emitted[source]:
            return
        self.done_reading.discard(source)
        if source in self.state.gens:
            old = _source_ids(self.index.store, source, self.first_id.get(source))
            self.summary.replaced += self.index.delete(TABLE, old)
        self._drop_old_errors(source)
        if source in self.partial:
            self.partial.discard(source)
            self.partial_dirty = True

    def _drop_old_errors(self, source: str) -> None:
        ids = [i for i, _, _ in self.state.row_errors.pop(source, [])]
        if source in self.state.file_errors:
            ids.append(self.state.file_errors.pop(source)[0])
        if ids:
            self.index.delete("errors", ids)

    def repair(self) -> None:
        """Sources with two generations of rows and no interrupted run recorded: keep the newest generation."""
        for source, gens in self.state.gens.items():
            if len(gens) < 2 or source in self.partial:
                continue
            keep = max(gens, key=gens.get)
            cond = None if ";" in source else f"source = '{source.replace(chr(39), chr(39) * 2)}'"
            stale = [i for b in self.index.store.scan(TABLE, ["id", "source", "mtime", "bytes"], where=cond)
                     for i, s, m, n in zip(*(b.column(c).to_pylist() for c in range(4)))
                     if s == source and (m, n) != keep]
            self.index.delete(TABLE, stale)
            self.state.gens[source] = {keep: gens[keep]}
            log.info("removed %d rows of %s left by an interrupted run", len(stale), source)

    # -- reading -----------------------------------------------------------------------------------------------
    def read_file(self, f: TextFile) -> None:
        self.summary.files += 1
        self.emitted[f.path] = 0
        try:
            for row in read_rows(f, self.opts.text_column, self.opts.split, self.opts.max_doc_bytes):
                self.emitted[f.path] += 1
                if row.error:
                    self.err_rows.append((f.path, f.mtime, f.bytes, ROW_STAGE, f"row {row.chunk}: {row.error}"))
                    continue
                h = text_hash(row.text)
                self.pending.append((f, row, h))
                if h not in self.cache and h not in self.new_texts:
                    self.new_texts[h] = row.text
                if len(self.new_texts) >= self.opts.batch_size or len(self.pending) >= 16 * self.opts.batch_size:
                    self.flush()
        except FileError as exc:
            self._fail_file(f, exc)
            return
        self.done_reading.add(f.path)
        self._maybe_finalize(f.path)

    def _fail_file(self, f: TextFile, exc: FileError) -> None:
        """The file became unusable while being read: everything of it goes, one error row says why."""
        had_rows = self.emitted.pop(f.path, 0) > 0
        if had_rows:  # commit them so that they can be deleted with the rest
            self.flush()
            self.committer.commit()
        if had_rows or f.path in self.state.gens:
            self.index.delete(TABLE, _source_ids(self.index.store, f.path))
        self._drop_old_errors(f.path)
        if f.path in self.partial:
            self.partial.discard(f.path)
            self._save_partial()
        self.err_rows.append((f.path, f.mtime, f.bytes, exc.stage, exc.reason))

    # -- encoding and rows -------------------------------------------------------------------------------------
    def _remember(self, h: str, vec: np.ndarray, n_tokens: int, n_chunks: int) -> None:
        self.cache[h] = (vec, n_tokens, n_chunks)
        self.cache.move_to_end(h)
        while len(self.cache) > max(self.opts.cache_texts, 1):
            self.cache.popitem(last=False)

    def _vectors_for(self, hashes: list[str]) -> int:
        """Fill the cache for ``hashes``: stored rows first, then the encoder. Returns how many were encoded."""
        stored = [h for h in hashes if h in self.state.by_hash]
        if stored:
            rows = self.index.store.take(TABLE, [self.state.by_hash[h] for h in stored],
                                         ["id", "hash", "vector", "n_tokens", "n_chunks"])
            vecs, _ = arrow_to_vectors(rows.column("vector"), self.index.dim)
            for h, v, nt, nc in zip(rows.column("hash").to_pylist(), vecs, rows.column("n_tokens").to_pylist(),
                                    rows.column("n_chunks").to_pylist()):
                self._remember(h, v, nt, nc)
        todo = [h for h in hashes if h not in self.cache]
        if todo:
            enc = encode_long_texts(self.encoder, [self.new_texts[h] for h in todo], self.opts.long_text,
                                    batch_size=self.opts.batch_size, warn=False)
            for h, v, nt, nc in zip(todo, enc.vectors, enc.n_tokens.tolist(), enc.n_chunks.tolist()):
                self._remember(h, v, nt, nc)
        return len(todo)

    def flush(self) -> None:
        if self.pending:
            need = [h for h in dict.fromkeys(h for _, _, h in self.pending) if h not in self.cache]
            encoded = self._vectors_for(need)
            self.summary.encoded += encoded
            self.summary.reused += len(self.pending) - encoded
            self._emit()
        self.pending.clear()
        self.new_texts.clear()
        if self.err_rows:
            e = self.err_rows
            self.committer.put("errors", pa.table({
                "id": self.index.next_ids("errors", len(e)), "path": [r[0] for r in e], "stage": [r[3] for r in e],
                "reason": [r[4] for r in e], "when": [now()] * len(e), "bytes": [r[2] for r in e],
                "mtime": [r[1] for r in e], "source_table": [TABLE] * len(e)}, schema=self.err_schema))
            self.summary.errors += len(e)
            self.err_rows = []

    def _emit(self) -> None:
        rows = self.pending
        keys = list(dict.fromkeys(k for _, r, _ in rows for k in r.meta))
        new = [k for k in keys if k not in self.schema.names]
        if new:  # a column first seen now: commit what was built with the old schema, then add it
            self.committer.commit()
            self.schema = self.index.ensure_table(TABLE, [pa.field(k, pa.string()) for k in new])
        n = len(rows)
        ids = self.index.next_ids(TABLE, n)
        got = [self.cache[h] for _, _, h in rows]
        n_tokens = np.array([g[1] for g in got], np.int64)
        n_chunks = np.array([g[2] for g in got], np.int64)
        for path, i in zip((f.path for f, _, _ in rows), ids):
            self.first_id.setdefault(path, int(i))
        cols = {"id": pa.array(ids), "source": [f.path for f, _, _ in rows], "chunk": [r.chunk for _, r, _ in rows],
                "text": [r.text for _, r, _ in rows], "n_tokens": n_tokens.astype(np.int32),
                "n_chunks": n_chunks.astype(np.int32), "strategy": [self.opts.long_text] * n,
                "hash": [h for _, _, h in rows], "mtime": [f.mtime for f, _, _ in rows],
                "bytes": [f.bytes for f, _, _ in rows],
                "vector": vectors_to_arrow(np.stack([g[0] for g in got]), self.index.dim)}
        base = {f.name for f in base_fields(TABLE, self.index.dim)}
        for name in self.schema.names:
            if name not in base:
                cols[name] = [r.meta.get(name) for _, r, _ in rows]
        window = self.window if self.opts.long_text == "truncate" else 0  # only truncation needs it
        counts = long_text_counts(n_tokens, n_chunks, self.opts.long_text, window)
        for k, v in counts.items():
            setattr(self.summary, k, getattr(self.summary, k) + v)
        self.summary.rows += n
        self.committer.put(TABLE, pa.table(cols, schema=self.schema))

    # -- end of run --------------------------------------------------------------------------------------------
    def finish(self) -> None:
        self.flush()
        self.committer.commit()
        if self.partial_dirty or set(self.index.manifest["tables"][TABLE].get("partial", [])) != self.partial:
            self._save_partial()

    def prune(self, found: TextDiscovery) -> None:
        seen = {f.path for f in found.files}
        known = set(self.state.gens) | set(self.state.row_errors) | set(self.state.file_errors)
        gone = {s for s in known if s not in seen and under_roots(s, found.roots)}
        if not gone:
            return
        ids = [i for b in self.index.store.scan(TABLE, ["id", "source"])
               for i, s in zip(b.column(0).to_pylist(), b.column(1).to_pylist()) if s in gone]
        self.summary.removed += self.index.delete(TABLE, ids)
        for s in gone:
            self._drop_old_errors(s)

    def progress(self, done: int, total: int) -> None:
        if self.on_progress is not None:
            s = self.summary
            self.on_progress(Progress(TABLE, done, total, {"rows": s.rows, "reused": s.reused, "errors": s.errors},
                                      time.monotonic() - self.t0))

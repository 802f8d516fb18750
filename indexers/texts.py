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
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from indexers.common import Failure, error_table, finish_run, per_second, scan_tuples
from indexers.text_rows import text_rows
from indexers.text_sources import SPLITS, FileError, Row, TextDiscovery, TextFile, read_rows
from indexers.text_state import ROW_STAGE, TABLE, FileLedger, TextState, repair_generations, source_ids
from retrieval.encode.text import check_strategy, encode_long_texts, long_text_counts
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index
from retrieval.io.sources import under_roots
from retrieval.io.workers import Committer, Progress
from retrieval.store.base import arrow_to_vectors

log = logging.getLogger(__name__)


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


def prune_gone(index: Index, state: TextState, ledger: FileLedger, found: TextDiscovery) -> int:
    """Delete the rows and error rows of files gone from the sources (under its roots); returns rows deleted."""
    seen = {f.path for f in found.files}
    known = state.sources()
    gone = {s for s in known if s not in seen and under_roots(s, found.roots)}
    if not gone:
        return 0
    ids = [i for i, s in scan_tuples(index.store, TABLE, ["id", "source"], paths=["source"]) if s in gone]
    removed = index.delete(TABLE, ids)
    for s in gone:
        ledger.drop_old_errors(s)
    return removed


def check_long_text(index: Index, long_text: str) -> None:
    """Refuse (``InvalidInput``) a long-text strategy other than the one the texts table holding rows was built
    with: one table never mixes strategies."""
    check_strategy(long_text)
    built = index.manifest.get("tables", {}).get(TABLE, {}).get("long_text")
    if built and built != long_text and index.store.has_table(TABLE) and index.store.count(TABLE):
        raise InvalidInput(f"the texts table of {index.path} was built with --long-text {built}; index with "
                           f"--long-text {built} or into a new index")


def start_text_run(index: Index, opts: TextIndexOptions) -> float:
    """What every text indexing run (either engine) does first: check the options against the index, make its
    tables and pin the long-text strategy; returns the run's start (``time.monotonic``)."""
    check_strategy(opts.long_text)
    if opts.split not in SPLITS:
        raise InvalidInput(f"unknown split {opts.split!r}; choose one of {', '.join(SPLITS)}")
    check_long_text(index, opts.long_text)
    t0 = time.monotonic()
    index.ensure_table(TABLE)
    index.ensure_table("errors")
    index.manifest["tables"][TABLE]["long_text"] = opts.long_text
    return t0


def index_texts(index: Index, found: TextDiscovery, options: TextIndexOptions | None = None,
                on_progress: Callable[[Progress], None] | None = None) -> TextIndexSummary:
    """Bring the ``texts`` table of ``index`` up to date with the files in ``found``; returns the run's summary."""
    opts = options or TextIndexOptions()
    t0 = start_text_run(index, opts)
    index.save_manifest()
    run = _Run(index, opts, TextIndexSummary(long_text=opts.long_text), on_progress, t0)
    repair_generations(index, run.state, run.ledger.partial)
    todo = [f for f in found.files if run.needs_reading(f)]
    for n, f in enumerate(todo):
        run.read_file(f)
        run.progress(n + 1, len(todo))
    run.finish()
    if opts.prune:
        run.prune(found)
    s = run.summary
    if s.truncated:
        log.warning("%d of %d texts were longer than the %d-token window and were truncated (--long-text truncate)",
                    s.truncated, s.rows, run.vectors.window)
    s.elapsed = finish_run(index, (TABLE,), bool(s.rows or s.removed or s.replaced), opts.optimize, t0)
    s.texts_per_s = per_second(s.encoded, s.elapsed)
    return s


class _TextVectors:
    """Vectors of distinct texts by hash: a bounded cache of recent ones, filled from stored rows of the same text
    or, failing that, by the encoder (loaded when the first text needs it)."""

    def __init__(self, index: Index, state: TextState, opts: TextIndexOptions):
        self.index, self.state, self.opts = index, state, opts
        self.cache: OrderedDict[str, tuple[np.ndarray, int, int]] = OrderedDict()
        self.new_texts: dict[str, str] = {}  # hash -> text, for texts not in the cache yet

    @property
    def encoder(self):
        return self.index.encoder()

    @property
    def window(self) -> int:
        """Content tokens per window for this run's strategy (75 for CLIP; 246 when stretched)."""
        ctx = self.encoder.context_length
        return 246 if self.opts.long_text == "longclip" and ctx <= 77 else ctx - 2

    def want(self, h: str, text: str) -> None:
        if h not in self.cache and h not in self.new_texts:
            self.new_texts[h] = text

    def _remember(self, h: str, vec: np.ndarray, n_tokens: int, n_chunks: int) -> None:
        self.cache[h] = (vec, n_tokens, n_chunks)
        self.cache.move_to_end(h)
        while len(self.cache) > max(self.opts.cache_texts, 1):
            self.cache.popitem(last=False)

    def fill(self, hashes: list[str]) -> int:
        """Cache the vectors of ``hashes``: stored rows first, then the encoder. Returns how many were encoded."""
        hashes = [h for h in dict.fromkeys(hashes) if h not in self.cache]
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
        self.new_texts.clear()
        return len(todo)


class _Run:
    """Reads the files, turns their rows into table rows (vectors from ``_TextVectors``) and commits them in blocks;
    ``FileLedger`` follows each file to completion."""

    def __init__(self, index: Index, opts: TextIndexOptions, summary: TextIndexSummary, on_progress, t0):
        self.index, self.opts, self.summary, self.on_progress, self.t0 = index, opts, summary, on_progress, t0
        self.state = TextState(index)
        self.ledger = FileLedger(index, self.state)
        self.vectors = _TextVectors(index, self.state, opts)
        self.schema = index.store.schema(TABLE)
        self.committer = Committer(self._add, opts.commit_rows, opts.commit_seconds, self.ledger.after_commit)
        self.pending: list[tuple[TextFile, Row, str]] = []
        self.failures: list[Failure] = []

    def _add(self, table: str, rows: pa.Table) -> None:
        self.ledger.before_add(table, rows)
        self.index.add_rows(table, rows)

    def needs_reading(self, f: TextFile) -> bool:
        """False for a file skipped as a known failure or as unchanged (counted in the summary)."""
        known = self.state.file_errors.get(f.path)
        if known is not None and not self.opts.retry_errors and (known[1], known[2]) == (f.mtime, f.bytes):
            self.summary.known_errors += 1
            return False
        if f.path not in self.ledger.partial and self.state.versions(f.path) == {(f.mtime, f.bytes)}:
            self.summary.unchanged += 1
            return False
        return True

    # -- reading -----------------------------------------------------------------------------------------------
    def read_file(self, f: TextFile) -> None:
        self.summary.files += 1
        self.ledger.start(f.path)
        try:
            for row in read_rows(f, self.opts.text_column, self.opts.split, self.opts.max_doc_bytes):
                self.ledger.count_row(f.path)
                if row.error:
                    self.failures.append(Failure(f.path, ROW_STAGE, f"row {row.chunk}: {row.error}", f.bytes, f.mtime))
                    continue
                h = text_hash(row.text)
                self.pending.append((f, row, h))
                self.vectors.want(h, row.text)
                batch = self.opts.batch_size
                if len(self.vectors.new_texts) >= batch or len(self.pending) >= 16 * batch:
                    self.flush()
        except FileError as exc:
            self._fail_file(f, exc)
            return
        self.ledger.end_of_file(f.path)

    def _fail_file(self, f: TextFile, exc: FileError) -> None:
        """The file became unusable while being read: everything of it goes, one error row says why."""
        had_rows = self.ledger.abandon(f.path)
        if had_rows:  # commit them so that they can be deleted with the rest
            self.flush()
            self.committer.commit()
        if had_rows or f.path in self.state.gens:
            self.index.delete(TABLE, source_ids(self.index.store, f.path))
        self.ledger.drop_old_errors(f.path)
        self.ledger.unmark(f.path)
        self.failures.append(Failure.of(f, exc.stage, exc.reason))

    # -- rows --------------------------------------------------------------------------------------------------
    def flush(self) -> None:
        if self.pending:
            encoded = self.vectors.fill([h for _, _, h in self.pending])
            self.summary.encoded += encoded
            self.summary.reused += len(self.pending) - encoded
            self._emit()
        self.pending.clear()
        if self.failures:
            self.committer.put("errors", error_table(self.index, TABLE, self.failures))
            self.summary.errors += len(self.failures)
            self.failures = []

    def _emit(self) -> None:
        rows = self.pending
        keys = list(dict.fromkeys(k for _, r, _ in rows for k in r.meta))
        new = [k for k in keys if k not in self.schema.names]
        if new:  # a column first seen now: commit what was built with the old schema, then add it
            self.committer.commit()
            self.schema = self.index.ensure_table(TABLE, [pa.field(k, pa.string()) for k in new])
        n = len(rows)
        ids = self.index.next_ids(TABLE, n)
        got = [self.vectors.cache[h] for _, _, h in rows]
        n_tokens = np.array([g[1] for g in got], np.int64)
        n_chunks = np.array([g[2] for g in got], np.int64)
        self.ledger.new_ids([f.path for f, _, _ in rows], ids)
        table = text_rows(self.schema, self.index.dim, self.opts.long_text, rows, ids, np.stack([g[0] for g in got]),
                          n_tokens, n_chunks)
        window = self.vectors.window if self.opts.long_text == "truncate" else 0  # only truncation needs it
        for k, v in long_text_counts(n_tokens, n_chunks, self.opts.long_text, window).items():
            setattr(self.summary, k, getattr(self.summary, k) + v)
        self.summary.rows += n
        self.committer.put(TABLE, table)

    # -- end of run --------------------------------------------------------------------------------------------
    def finish(self) -> None:
        self.flush()
        self.committer.commit()
        self.ledger.close()
        self.summary.replaced += self.ledger.replaced

    def prune(self, found: TextDiscovery) -> None:
        self.summary.removed += prune_gone(self.index, self.state, self.ledger, found)

    def progress(self, done: int, total: int) -> None:
        if self.on_progress is not None:
            s = self.summary
            self.on_progress(Progress(TABLE, done, total, {"rows": s.rows, "reused": s.reused, "errors": s.errors},
                                      time.monotonic() - self.t0))

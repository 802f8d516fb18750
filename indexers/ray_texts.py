"""``clipdex index texts SRC --engine ray``: a file per task, in a pool of Ray actors (the model loaded once per
actor) that read the file, embed its distinct texts with the run's long-text strategy and write its rows as Lance
fragments; the driver commits them and finishes each file as the local engine does.

    driver: which files to read (``SourceState``: per file, never per row; the local rules: unchanged and known-bad
            files skipped), every one of them marked partial in the manifest before any row lands, an id block
            per file
    actors: read the file (``read_rows``: documents split as asked, tables' text column, metadata columns), hash,
            embed each distinct text once, write the rows (``text_rows``) as fragments; hand back their metadata,
            the row errors (or the file's error) and the counts
    driver: per group of finished files, one Append, one ``errors`` commit; then per file, its older rows and error
            rows deleted and its partial mark cleared (``FileLedger``)

The rows are the local engine's (same columns, texts, vectors, chunks and long-text counts). Two things differ: a
text is embedded once per file rather than once per run (the local engine also reuses vectors of identical texts
already stored: ``encoded`` and ``reused`` count differently), and rows get ids from their file's block (one per
byte of a text file, one per row of a Parquet file: a row takes at least one byte). New metadata columns are added
by the actor that meets them (a schema-only commit, retried while another commit races it), before its fragments.
A killed driver leaves the files in flight marked partial: the next run reads them again and drops the rows of the
interrupted attempt, as after a local run. Lance tables only.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexers.common import Failure, error_table, finish_run, per_second
from indexers.ray_engine import RayOptions, check_ray_index, start_ray
from indexers.text_rows import text_rows
from indexers.text_sources import FileError, TextDiscovery, TextFile, read_rows
from indexers.text_state import ROW_STAGE, TABLE, FileLedger, SourceState, TextState, repair_generations, source_ids
from indexers.texts import TextIndexOptions, TextIndexSummary, prune_gone, start_text_run, text_hash
from retrieval.encode.encoder import load_encoder
from retrieval.encode.text import encode_long_texts, long_text_counts
from retrieval.index.directory import Index
from retrieval.io.workers import Progress
from retrieval.store.lance_fragments import add_null_columns, table_schema, write_rows

COUNTS = ("long", "chunked", "stretched", "truncated")


def id_block(f: TextFile) -> int:
    """Ids to reserve for a file: one per row it can hold (a Parquet file's row count, else one per byte)."""
    if f.kind == "parquet":
        try:
            return pq.ParquetFile(f.path).metadata.num_rows + 1
        except (OSError, ValueError, pa.ArrowException):
            return 1  # unreadable: the actor reports it
    return int(f.bytes) + 1


class TextWriter:
    """Ray actor: one file at a time, read, embedded and written as fragments of ``texts``."""

    def __init__(self, model: str, device: str | None, threads: int, lance_root: str, dim: int,
                 opts: TextIndexOptions):
        import torch  # heavy optional dependency: only the actors set its threads

        torch.set_num_threads(max(1, threads))
        self.encoder = load_encoder(model, device=device)
        self.root, self.dim, self.opts = lance_root, dim, opts

    def index_file(self, f: TextFile, id_base: int) -> dict:
        """The file's rows from id ``id_base`` on, written -> {"path", "first_id", "fragments", "rows", "encoded"
        (distinct texts), "failures" (row errors), "file_error" (the file's, then nothing else counts), "s" (seconds),
        and the long-text counts of COUNTS}."""
        o = self.opts
        out: dict = {"path": f.path, "first_id": id_base, "fragments": [], "rows": 0, "encoded": 0, "failures": [],
                     "file_error": None, "s": 0.0, **dict.fromkeys(COUNTS, 0)}
        t0 = time.perf_counter()
        rows, failures = [], []
        try:
            for row in read_rows(f, o.text_column, o.split, o.max_doc_bytes):
                if row.error:
                    failures.append(Failure(f.path, ROW_STAGE, f"row {row.chunk}: {row.error}", f.bytes, f.mtime))
                else:
                    rows.append((f, row, text_hash(row.text)))
        except FileError as exc:
            out["file_error"] = tuple(Failure.of(f, exc.stage, exc.reason))
            return out
        out["failures"] = [tuple(x) for x in failures]
        if rows:
            distinct = {h: r.text for _, r, h in rows}
            enc = encode_long_texts(self.encoder, list(distinct.values()), o.long_text, batch_size=o.batch_size,
                                    warn=False)
            at = {h: i for i, h in enumerate(distinct)}
            pick = np.array([at[h] for _, _, h in rows])
            n_tokens, n_chunks = enc.n_tokens[pick], enc.n_chunks[pick]
            schema = self._schema(rows)
            ids = id_base + np.arange(len(rows))
            table = text_rows(schema, self.dim, o.long_text, rows, ids, enc.vectors[pick], n_tokens, n_chunks)
            out["fragments"] = write_rows(self.root, TABLE, table)
            window = self._window() if o.long_text == "truncate" else 0
            out.update(long_text_counts(n_tokens, n_chunks, o.long_text, window))
            out.update(rows=len(rows), encoded=len(distinct))
        out["s"] = time.perf_counter() - t0
        return out

    def _schema(self, rows) -> pa.Schema:
        """The table's schema, with a string column added for each metadata key the rows bring first."""
        keys = list(dict.fromkeys(k for _, r, _ in rows for k in r.meta))
        schema = table_schema(self.root, TABLE)
        new = [k for k in keys if k not in schema.names]
        if new:
            add_null_columns(self.root, TABLE, [pa.field(k, pa.string()) for k in new])
            schema = table_schema(self.root, TABLE)
        return schema

    def _window(self) -> int:
        ctx = self.encoder.context_length
        return 246 if self.opts.long_text == "longclip" and ctx <= 77 else ctx - 2


def index_texts_ray(index: Index, found: TextDiscovery, options: TextIndexOptions | None = None,
                    ray_options: RayOptions | None = None,
                    on_progress: Callable[[Progress], None] | None = None) -> TextIndexSummary:
    """``index_texts`` with a file per task in a pool of embedding actors: the same rows, errors and marks."""
    ray = check_ray_index(index)
    opts, ropts = options or TextIndexOptions(), ray_options or RayOptions()
    t0 = start_text_run(index, opts)
    s = TextIndexSummary(long_text=opts.long_text)
    state = SourceState(index)  # per source, never per row: the driver's memory is bounded by the files
    ledger = FileLedger(index, state)
    repair_generations(index, state, ledger.partial)
    todo = [f for f in found.files if _needs_reading(f, state, ledger, opts, s)]
    if todo:
        ledger.partial |= {f.path for f in todo}  # marked before any row lands: a killed run reads them again
        ledger.save()
        start_ray(ray, ropts)
        actor = ray.remote(TextWriter).options(num_cpus=ropts.cpus_per_actor, num_gpus=ropts.gpus_per_actor or None,
                                               max_restarts=3, max_task_retries=3)
        device = "cuda" if ropts.gpus_per_actor else "cpu"
        pool = ray.util.ActorPool([actor.remote(index.model, device, int(ropts.cpus_per_actor), str(index.store.root),
                                                index.dim, opts) for _ in range(ropts.actors or 1)])
        files = {f.path: f for f in todo}
        work = [(f, int(index.next_ids(TABLE, id_block(f))[0])) for f in todo]  # a block per file: no collisions
        for n, report in enumerate(pool.map_unordered(lambda a, w: a.index_file.remote(*w), work)):
            _finish(index, state, ledger, files[report["path"]], report, s)
            if on_progress is not None:
                on_progress(Progress(TABLE, n + 1, len(todo), {"rows": s.rows, "reused": s.reused,
                                                               "errors": s.errors}, time.monotonic() - t0))
    ledger.close()
    if opts.prune:
        s.removed += prune_gone(index, state, ledger, found)
    s.elapsed = finish_run(index, (TABLE,), bool(s.rows or s.removed or s.replaced), opts.optimize, t0)
    s.texts_per_s = per_second(s.encoded, s.elapsed)
    return s


def _needs_reading(f: TextFile, state: TextState, ledger: FileLedger, opts: TextIndexOptions,
                   s: TextIndexSummary) -> bool:
    """The local engine's rule: a known bad file unchanged since, or an unchanged file, is skipped (counted)."""
    known = state.file_errors.get(f.path)
    if known is not None and not opts.retry_errors and (known[1], known[2]) == (f.mtime, f.bytes):
        s.known_errors += 1
        return False
    if f.path not in ledger.partial and state.versions(f.path) == {(f.mtime, f.bytes)}:
        s.unchanged += 1
        return False
    return True


def _finish(index: Index, state: TextState, ledger: FileLedger, f: TextFile, r: dict, s: TextIndexSummary) -> None:
    """One finished file: its rows (one Append) and errors, then what they replace deleted and its mark cleared;
    a file that failed whole keeps none of its rows, old or new."""
    s.files += 1
    failures = [Failure(*x) for x in r["failures"]]
    if r["file_error"] is not None:
        if f.path in state.gens:
            index.delete(TABLE, source_ids(index.store, f.path))
        ledger.drop_old_errors(f.path)
        failures = [Failure(*r["file_error"])]
    elif r["fragments"]:
        index.commit_fragments(TABLE, r["fragments"])
    if failures:
        index.add_rows("errors", error_table(index, TABLE, failures))
    if r["file_error"] is None:
        if f.path in state.gens:
            s.replaced += index.delete(TABLE, source_ids(index.store, f.path, r["first_id"]))
        ledger.drop_old_errors(f.path)
        s.rows += r["rows"]
        s.encoded += r["encoded"]
        s.reused += r["rows"] - r["encoded"]
        for k in COUNTS:
            setattr(s, k, getattr(s, k) + r[k])
    s.errors += len(failures)
    ledger.unmark(f.path)

"""Bring your own embeddings: index precomputed vectors (no model run) into the ``images`` table.

The sources (clip-retrieval's layout, folders of ``.npy`` files, Parquet files with a vector column) are found and
checked whole by ``embedding_sources.discover_embeddings`` before the index is touched; ``index_embeddings`` then
streams them in blocks. Vectors with NaN/inf values or zero norm are rejected into the ``errors`` table (path
``FILE#ROW``, stage ``vector``), never normalised into noise, and so are the rows of a Parquet vector column that are
null or of another length; the others are L2-normalised (``embedding_rows``). Progress is kept per source file
(rows done, in the manifest, after every committed block): a file is done only when all its blocks are, so a re-run
skips finished files and resumes a half-written one where its last block ended. The model that made the vectors
must be the one the index is pinned to (``ModelMismatch``). ``--engine ray`` (``ray_embeddings``) shares the
table, the rows and the progress records.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from indexers.common import Failure, error_table, finish_run, scan_tuples, string_literal
from indexers.embedding_rows import TABLE, bad_vectors, block_rows, from_row
from indexers.embedding_sources import Part, blocks, half_precision, open_parquet
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index
from retrieval.index.opening import check_writer_model
from retrieval.index.schemas import base_fields
from retrieval.io.files import stored_path
from retrieval.io.shard_meta import column_name
from retrieval.io.workers import Progress

log = logging.getLogger(__name__)
__all__ = ["EmbeddingSummary", "FileProgress", "bad_vectors", "index_embeddings", "prepare_table"]


@dataclass
class EmbeddingSummary:
    files: int = 0
    skipped_files: int = 0
    empty_files: int = 0
    added: int = 0
    errors: int = 0
    elapsed: float = 0.0
    error_reasons: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class FileProgress:
    """Rows done per source file, in the manifest (``tables.images.embedding_files``): a file is done only when
    all its blocks are. Resuming a file first deletes what an interrupted block left past its last checkpoint."""

    def __init__(self, index: Index):
        self.index = index
        self.files: dict = index.manifest["tables"][TABLE].setdefault("embedding_files", {})
        self.legacy: dict[str, int] = {}
        if "source_file" in index.store.schema(TABLE).names:  # indexes from before the checkpoints
            for f, r in scan_tuples(index.store, TABLE, ["source_file", "source_row"], paths=()):
                if f and f not in self.files:
                    self.legacy[f] = max(self.legacy.get(f, -1), r if r is not None else -1)

    def done(self, part: Part) -> int:
        key = stored_path(part.path)
        if key in self.files:
            return int(self.files[key])
        return self.legacy.get(key, -1) + 1

    def resume(self, part: Part, start: int) -> None:
        """Delete rows and error rows of ``part`` from ``start`` on (left by an interrupted block)."""
        key = stored_path(part.path)
        where = None if ";" in key else f"source_file = {string_literal(key)} AND source_row >= {int(start)}"
        store = self.index.store
        rows = scan_tuples(store, TABLE, ["id", "source_file", "source_row"], where=where, paths=())
        ids = [i for i, f, r in rows if f == key and r >= start]
        if ids:
            self.index.delete(TABLE, ids)
        errors = scan_tuples(store, "errors", ["id", "path"], where="stage = 'vector'", paths=())
        errs = [i for i, p in errors if p.startswith(key + "#") and int(p.rsplit("#", 1)[1]) >= start]
        if errs:
            self.index.delete("errors", errs)

    def record(self, part: Part, rows_done: int) -> None:
        self.files[stored_path(part.path)] = int(rows_done)
        self.index.save_manifest()

    def begin(self, todo: list[tuple[Part, int]]) -> None:
        """Record the parts about to be read at their first row (one manifest save) before any of their rows is
        committed: a run killed after committing a part's rows, before recording it, resumes the part from there
        (its rows and error rows past that row deleted) rather than taking its stored rows for done."""
        for p, start in todo:
            self.files[stored_path(p.path)] = int(start)
        self.index.save_manifest()

    def todo(self, parts: list[Part], summary: EmbeddingSummary) -> tuple[list[tuple[Part, int]], int]:
        """[(part, first row to index)] of the parts not done yet, each resumed (what an interrupted block left
        past its checkpoint deleted), and the rows of the parts already done; empty and done parts counted in
        ``summary``."""
        out, done_rows = [], 0
        for p in parts:
            start = self.done(p)
            if p.rows == 0:  # nothing to index, on the first run as on later ones: not "already indexed"
                summary.empty_files += 1
            elif start >= p.rows:
                summary.skipped_files += 1
                done_rows += p.rows
            else:
                summary.files += 1
                if start > 0 or stored_path(p.path) in self.files:  # recorded at 0 by ``begin``: rows may be in
                    self.resume(p, start)
                out.append((p, start))
        return out, done_rows


def prepare_table(index: Index, parts: list[Part], model: str | None) -> pa.Schema:
    """Check the model and dimension, and make the ``images`` table hold every metadata column of the parts
    (stored names) and the ``errors`` table; returns the table's schema. A new table of float16 sources stores
    float16 vectors (half the disk; scores within float16 rounding, see benchmarks/ANN.md)."""
    check_writer_model(index, model)
    if parts[0].dim != index.dim:
        raise InvalidInput(f"the embeddings are {parts[0].dim}-dimensional; this index holds {index.dim}-d vectors")
    extra = {"source_file": pa.string(), "source_row": pa.int64()}
    for p in parts:
        if p.meta:
            for f in open_parquet(p.meta).schema_arrow:
                name = column_name(f.name)[0]  # a.b -> a_b, as for every other metadata; None: left out
                listed = pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
                if f.name != p.column and name and not listed:
                    extra.setdefault(name, f.type)
    base = {f.name for f in base_fields(TABLE, index.dim)}
    fields = [pa.field(k, v) for k, v in extra.items() if k not in base]
    schema = index.ensure_table(TABLE, fields, half_precision(parts))
    index.ensure_table("errors")
    return schema


def index_embeddings(index: Index, parts: list[Part], batch_rows: int = 65536, on_progress=None,
                     model: str | None = None) -> EmbeddingSummary:
    """Add every part not indexed yet (resuming a part an interrupted run left half done); returns the summary.
    ``model``: the model that made the vectors ("none": unknown), refused unless the index is pinned to it."""
    t0 = time.monotonic()
    summary = EmbeddingSummary()
    schema = prepare_table(index, parts, model)
    progress = FileProgress(index)
    total = sum(p.rows for p in parts)
    todo, rows_done = progress.todo(parts, summary)
    held: list = []  # blocks read, not committed yet: (part, start, x, why, tx, meta)

    def commit() -> None:
        _commit(index, schema, held, summary)
        for part, s, x, *_ in held:  # after the commit: a run killed before it resumes these rows
            progress.record(part, s + len(x))
        held.clear()

    for p, start in todo:
        for block in blocks(p, batch_rows):
            block = from_row(block, start)  # a block straddling the checkpoint (another block size) cut
            if block is None:
                continue
            held.append((p, *block))
            if sum(len(b[2]) for b in held) >= batch_rows:
                commit()
            if on_progress is not None:
                s, x = block[0], block[1]
                counts = {"added": summary.added, "errors": summary.errors}
                on_progress(Progress("vectors", rows_done + s + len(x), total, counts, time.monotonic() - t0))
        rows_done += p.rows
    if held:
        commit()
    summary.elapsed = finish_run(index, (TABLE,), summary.added > 0, True, t0)
    return summary


def _commit(index, schema, held: list, summary) -> None:
    """Blocks of one or more parts, each (part, start, x, why, tx, meta), committed as one: bad vectors to
    ``errors``, the others (normalised, with their caption vectors and metadata) to the table. The small files of
    a source (or a file's last block) share a fragment with the next file's rows: a fragment of at least
    ``batch_rows`` rows is never merged by compaction, so the import writes every row once (no transient copy)."""
    tables, failed = [], []
    for part, start, x, why, tx, meta in held:
        rows, failures = block_rows(schema, index.dim, part, start, x, why, tx, meta,
                                    lambda kept: index.next_ids(TABLE, len(kept)))
        count_block(summary, len(rows) if rows is not None else 0, failures)
        failed.extend(failures)
        if rows is not None:
            tables.append(rows)
    if failed:
        index.add_rows("errors", error_table(index, TABLE, failed))
    if tables:
        index.add_rows(TABLE, pa.concat_tables(tables) if len(tables) > 1 else tables[0])


def count_block(summary: EmbeddingSummary, added: int, failures: list[Failure]) -> None:
    """A block's rows added and failures counted in ``summary``."""
    for f in failures:
        summary.error_reasons[f.reason] = summary.error_reasons.get(f.reason, 0) + 1
    summary.errors += len(failures)
    summary.added += added

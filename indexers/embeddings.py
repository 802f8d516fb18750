"""Bring your own embeddings: index precomputed vectors (no model run) into the ``images`` table.

The sources (clip-retrieval's layout, folders of ``.npy`` files, Parquet files with a vector column) are found and
checked whole by ``embedding_sources.discover_embeddings`` before the index is touched; ``index_embeddings`` then
streams them in blocks. Vectors with NaN/inf values or zero norm are rejected into the ``errors`` table (path
``FILE#ROW``, stage ``vector``), never normalised into noise, and so are the rows of a Parquet vector column that are
null or of another length; the others are L2-normalised. Progress is kept per source file (rows done, in the
manifest, after every committed block): a file is done only when all its blocks are, so a re-run skips finished
files and resumes a half-written one where its last block ended. The model that made the vectors must be the one
the index is pinned to (``ModelMismatch``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from indexers.common import Failure, error_table, finish_run, scan_tuples, string_literal
from indexers.embedding_sources import Part, blocks, open_parquet
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index
from retrieval.index.opening import check_writer_model
from retrieval.index.schemas import base_fields
from retrieval.io.files import stored_path
from retrieval.io.shard_meta import column_name
from retrieval.io.workers import Progress
from retrieval.store.base import vectors_to_arrow

log = logging.getLogger(__name__)
TABLE = "images"
PATH_NAMES = ("path", "image_path", "url", "filepath", "file")
_REASONS = {0: None, 1: "vector has NaN or infinite values", 2: "vector is all zeros"}  # bad_vectors' codes


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


def bad_vectors(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n,) reason codes: 0 fine, 1 NaN/inf, 2 zero norm."""
    finite = np.isfinite(x).all(1)
    norms = np.linalg.norm(np.where(np.isfinite(x), x, 0), axis=1)
    return np.where(~finite, 1, np.where(norms == 0, 2, 0))


class _Progress:
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


def index_embeddings(index: Index, parts: list[Part], batch_rows: int = 65536, on_progress=None,
                     model: str | None = None) -> EmbeddingSummary:
    """Add every part not indexed yet (resuming a part an interrupted run left half done); returns the summary.
    ``model``: the model that made the vectors ("none": unknown), refused unless the index is pinned to it."""
    t0 = time.monotonic()
    summary = EmbeddingSummary()
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
    schema = index.ensure_table(TABLE, [pa.field(k, v) for k, v in extra.items() if k not in base])
    index.ensure_table("errors")
    progress = _Progress(index)
    total, rows_done = sum(p.rows for p in parts), 0
    for p in parts:
        start = progress.done(p)
        if p.rows == 0:  # nothing to index, on the first run as on later ones: not "already indexed"
            summary.empty_files += 1
            continue
        if start >= p.rows:
            summary.skipped_files += 1
            rows_done += p.rows
            continue
        summary.files += 1
        if start > 0:
            progress.resume(p, start)
        for s, x, why, tx, meta in blocks(p, batch_rows):
            if s + len(x) <= start:
                continue
            if s < start:  # a block straddling the checkpoint (another block size than the interrupted run's)
                cut = start - s
                x = x[cut:]
                why = why[cut:] if why is not None else None
                tx = tx[cut:] if tx is not None else None
                meta = meta.slice(cut) if meta is not None else None
                s = start
            _commit(index, schema, p, s, x, why, tx, meta, summary)
            progress.record(p, s + len(x))
            if on_progress is not None:
                counts = {"added": summary.added, "errors": summary.errors}
                on_progress(Progress("vectors", rows_done + s + len(x), total, counts, time.monotonic() - t0))
        rows_done += p.rows
    summary.elapsed = finish_run(index, (TABLE,), summary.added > 0, True, t0)
    return summary


def _commit(index, schema, part, start, x, why, tx, meta, summary) -> None:
    """One block of ``part`` from row ``start``: bad vectors to ``errors``, the others (normalised, with their
    caption vectors and metadata) to the table."""
    m_all = len(x)
    reasons = [_REASONS[c] for c in bad_vectors(x).tolist()]
    if why is not None:
        reasons = [w or r for w, r in zip(why, reasons)]
    ok = np.array([r is None for r in reasons], bool) if m_all else np.zeros(0, bool)
    if (~ok).any():
        bad = np.nonzero(~ok)[0]
        for i in bad:
            summary.error_reasons[reasons[i]] = summary.error_reasons.get(reasons[i], 0) + 1
        failures = [Failure(f"{part.path}#{start + i}", "vector", reasons[i]) for i in bad]
        index.add_rows("errors", error_table(index, TABLE, failures))
        summary.errors += len(bad)
    if not ok.any():
        return
    keep = np.nonzero(ok)[0]
    xv = x[keep] / np.linalg.norm(x[keep], axis=1, keepdims=True)
    m = len(keep)
    cols = {
        "id": pa.array(index.next_ids(TABLE, m)),
        "vector": vectors_to_arrow(xv, index.dim),
        "source_file": pa.array([stored_path(part.path)] * m),
        "source_row": pa.array(start + keep, pa.int64()),
    }
    if tx is not None:
        cols["text_vector"] = _caption_vectors(np.array(tx[keep], np.float32), index.dim)
    meta = _stored_names(meta.take(pa.array(keep))) if meta is not None else None
    for f in schema:
        if f.name in cols:
            continue
        src = None
        if meta is not None and f.name in meta.column_names:
            src = meta.column(f.name)
        elif f.name == "path" and meta is not None:
            src = next((meta.column(c) for c in PATH_NAMES if c in meta.column_names), None)
        if f.name == "path" and src is None:
            src = pa.array([stored_path(f"{part.path}#{start + i}") for i in keep])
        try:
            cols[f.name] = src.cast(f.type) if src is not None else pa.nulls(m, f.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cols[f.name] = pa.nulls(m, f.type)
    index.add_rows(TABLE, pa.table({f.name: cols[f.name] for f in schema}, schema=schema))
    summary.added += m


def _caption_vectors(t: np.ndarray, dim: int) -> pa.FixedSizeListArray:
    """(m, dim) caption vectors -> the ``text_vector`` column: normalised, null where a vector is bad."""
    tbad = bad_vectors(t) != 0
    t[tbad] = 0
    norms = np.linalg.norm(t, axis=1)
    norms[tbad] = 1
    t = t / norms[:, None]
    return pa.FixedSizeListArray.from_arrays(pa.array(t.astype(np.float32).reshape(-1)), dim, mask=pa.array(tbad))


def _stored_names(meta: pa.Table) -> pa.Table:
    """Metadata columns under the names they are stored as (``retrieval.io.shard_meta.column_name``); a column that
    cannot be one, or that repeats an earlier one's name, is left out."""
    keep, names = [], []
    for i, n in enumerate(meta.column_names):
        name = column_name(n)[0]
        if name and name not in names:
            keep.append(i)
            names.append(name)
    return meta.select(keep).rename_columns(names)

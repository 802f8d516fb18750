"""Bring your own embeddings: index precomputed vectors (no model run) into the ``images`` table.

Sources (checked whole before the index is touched: dimensions, metadata row counts):

- clip-retrieval's inference layout: ``img_emb/img_emb_{i}.npy``, optional ``text_emb/text_emb_{i}.npy`` (the
  captions' vectors -> ``text_vector``) and ``metadata/metadata_{i}.parquet`` (row j describes vector j);
- a folder of ``.npy`` files, each with an optional ``<same name>.parquet`` of metadata;
- Parquet files with a fixed- or variable-size list vector column (``vector``, ``embedding``, ``emb``,
  ``image_embedding``, or ``column=``) and metadata columns.

Everything is streamed (``.npy`` blocks read from the file, pyarrow ``iter_batches``). Vectors with NaN/inf values
or zero norm are rejected into the ``errors`` table (path ``FILE#ROW``, stage ``vector``), never normalised into
noise, and so are the rows of a Parquet vector column that are null or of another length; the others are
L2-normalised. Progress is kept per source file (rows done, in the manifest, after every committed block): a
file is done only when all its blocks are, so a re-run skips finished files and resumes a half-written one where
its last block ended. The model that made the vectors must be the one the index is pinned to (``ModelMismatch``).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from indexers.common import Failure, error_table, finish_run, scan_tuples, string_literal
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index
from retrieval.index.opening import check_writer_model
from retrieval.index.schemas import base_fields
from retrieval.io.files import stored_path
from retrieval.io.workers import Progress
from retrieval.store.base import vectors_to_arrow

log = logging.getLogger(__name__)
TABLE = "images"
VECTOR_NAMES = ("vector", "embedding", "emb", "image_embedding", "img_emb")
PATH_NAMES = ("path", "image_path", "url", "filepath", "file")


@dataclass
class Part:
    """One source file: vectors (an .npy or a Parquet column), optional caption vectors and metadata."""

    path: str
    rows: int
    dim: int
    npy: str | None = None
    text_npy: str | None = None
    meta: str | None = None
    column: str | None = None  # vector column of a Parquet source


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


def _npy_shape(path: Path) -> tuple[int, ...]:
    """The shape of an ``.npy`` file of real floating-point values (float16/32/64); any other dtype is refused:
    integers and booleans are no embeddings, complex values would lose their imaginary part."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: not a readable .npy array ({exc})") from None
    _check_float(arr.dtype, path)
    return arr.shape


def _check_float(dtype, path) -> None:
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise InvalidInput(f"{path}: holds {np.dtype(dtype).name} values; embeddings must be float16, float32 or "
                           f"float64")


def _vector_column(schema: pa.Schema, path: Path, column: str | None) -> tuple[str, int]:
    names = [column] if column else [n for n in VECTOR_NAMES if n in schema.names]
    for name in names:
        if name in schema.names:
            t = schema.field(name).type
            listed = pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)
            if listed and not pa.types.is_floating(t.value_type):
                raise InvalidInput(f"{path}: vector column {name!r} holds {t.value_type} values; embeddings must be "
                                   f"float16, float32 or float64")
            if pa.types.is_fixed_size_list(t):
                return name, t.list_size
            if listed:
                return name, -1  # size read from the first row
    raise InvalidInput(f"{path}: no vector column (looked for {', '.join(names)}); name it with --column")


def discover_embeddings(src: str | Path, column: str | None = None) -> list[Part]:
    """The source's parts, validated: one dimension throughout, metadata with a row per vector."""
    src = Path(src).expanduser()
    if not src.exists():
        raise InvalidInput(f"{src} does not exist")
    parts: list[Part] = []
    if src.is_file() or not any(src.glob("*.npy")) and not (src / "img_emb").is_dir():
        files = [src] if src.is_file() else sorted(src.glob("*.parquet"))
        for f in files:
            if f.suffix == ".npy":
                shape = _npy_shape(f)
                parts.append(Part(str(f), shape[0], shape[-1] if len(shape) == 2 else -2, npy=str(f)))
                continue
            pf = _parquet(str(f))
            name, dim = _vector_column(pf.schema_arrow, f, column)
            if dim == -1:
                first = next(pf.iter_batches(batch_size=1, columns=[name]), None)
                dim = len(first.column(0)[0].as_py()) if first is not None and len(first) else 0
            parts.append(Part(str(f), pf.metadata.num_rows, dim, meta=str(f), column=name))
    else:
        clip = (src / "img_emb").is_dir()
        npys = sorted((src / "img_emb").glob("*.npy")) if clip else sorted(src.glob("*.npy"))
        metas = sorted((src / "metadata").glob("*.parquet")) if clip else []
        texts = sorted((src / "text_emb").glob("*.npy")) if clip else []
        if clip and metas and len(metas) != len(npys):
            raise InvalidInput(f"{src}: {len(npys)} img_emb files but {len(metas)} metadata files")
        for i, f in enumerate(npys):
            shape = _npy_shape(f)
            meta = str(metas[i]) if clip and metas else (str(f.with_suffix(".parquet"))
                                                          if f.with_suffix(".parquet").is_file() else None)
            text = str(texts[i]) if clip and i < len(texts) else None
            parts.append(Part(str(f), shape[0], shape[1] if len(shape) == 2 else -2, npy=str(f), text_npy=text,
                              meta=meta))
    if not parts:
        raise InvalidInput(f"{src}: no .npy or Parquet embeddings found")
    dim = parts[0].dim
    for p in parts:
        if p.dim == -2:
            raise InvalidInput(f"{p.path}: expected a 2-d (rows, dim) array")
        if p.dim != dim:
            raise InvalidInput(f"dimension mismatch: {parts[0].path} has {dim}-d vectors, {p.path} has {p.dim}-d")
        if p.meta and p.npy:
            m = _parquet(p.meta).metadata.num_rows
            if m != p.rows:  # row j of the metadata describes vector j: any other count pairs the wrong rows
                what = f"{p.rows - m} rows are missing" if m < p.rows else f"{m - p.rows} rows too many"
                raise InvalidInput(f"{p.meta} has {m} metadata rows for the {p.rows} vectors of {p.path}: {what}")
        if p.text_npy:
            tshape = _npy_shape(Path(p.text_npy))
            if tshape != (p.rows, dim):
                raise InvalidInput(f"{p.text_npy} has shape {tshape}; expected {(p.rows, dim)} to match {p.path}")
    return parts


def _vector_rows(col: pa.Array, dim: int) -> tuple[np.ndarray, list[str | None]]:
    """A list column of n rows -> ((n, dim) float32, per row None or why it is no ``dim``-d vector (null, wrong
    length)); bad rows are zeros in the matrix."""
    n = len(col)
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    lengths = pc.fill_null(pc.list_value_length(col), -1).to_numpy(zero_copy_only=False)
    ok = lengths == dim
    x = np.zeros((n, dim), np.float32)
    if ok.any():
        good = col.filter(pa.array(ok))
        x[ok] = np.asarray(good.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
    why = [None if k else ("vector is null" if length < 0 else f"vector has {length} values, not {dim}")
           for k, length in zip(ok.tolist(), lengths.tolist())]
    return x, why


def _blocks(part: Part, rows: int) -> Iterator[tuple[int, np.ndarray, list | None, np.ndarray | None, pa.Table | None]]:
    """(start row, vectors (b, d), per-row problems or None, caption vectors or None, metadata rows or None)."""
    if part.npy:
        x = _NpyRows(part.npy)
        tx = _NpyRows(part.text_npy) if part.text_npy else None
        meta_iter = _parquet(part.meta).iter_batches(batch_size=rows) if part.meta else None
        carry = None
        for s in range(0, part.rows, rows):
            b = min(rows, part.rows - s)
            meta = None
            if meta_iter is not None:  # re-chunk the metadata batches to the vector blocks
                got = [carry] if carry is not None and len(carry) else []
                have = sum(len(g) for g in got)
                while have < b:
                    rb = next(meta_iter)
                    got.append(pa.Table.from_batches([rb]))
                    have += len(rb)
                table = pa.concat_tables(got)
                meta, carry = table.slice(0, b), table.slice(b)
            yield s, np.asarray(x[s:s + b], np.float32), None, (np.asarray(tx[s:s + b], np.float32) if tx is not None
                                                                else None), meta
        return
    s = 0
    for rb in _parquet(part.meta).iter_batches(batch_size=rows):
        x, why = _vector_rows(rb.column(rb.schema.get_field_index(part.column)), part.dim)
        meta = pa.Table.from_batches([rb]).drop_columns([part.column])
        yield s, x, why, None, meta
        s += len(rb)


class _NpyRows:
    """Rows [s, s + b) of a 2-D ``.npy`` file read with plain file reads: a memory map would leave every page it
    touched resident (the whole file by the end of an import), reads leave only the block in hand."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            self.offset = f.tell()
        if fortran or len(shape) != 2:
            raise ValueError(f"{path}: expected a C-ordered 2-D array, found shape {shape}")
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)

    def __getitem__(self, rows: slice) -> np.ndarray:
        s, e, _ = rows.indices(self.shape[0])
        row_bytes = self.shape[1] * self.dtype.itemsize
        with open(self.path, "rb") as f:
            f.seek(self.offset + s * row_bytes)
            data = f.read(max(0, e - s) * row_bytes)
        return np.frombuffer(data, self.dtype).reshape(-1, self.shape[1])


def _parquet(path: str) -> pq.ParquetFile:
    """A Parquet file; one whose name is not UTF-8 is opened by us (pyarrow cannot open such a name)."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return pq.ParquetFile(open(path, "rb"))  # closed with the ParquetFile's last reference
    return pq.ParquetFile(path)


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
        ids = [i for i, f, r in scan_tuples(self.index.store, TABLE, ["id", "source_file", "source_row"],
                                            where=where, paths=()) if f == key and r >= start]
        if ids:
            self.index.delete(TABLE, ids)
        errs = [i for i, p in scan_tuples(self.index.store, "errors", ["id", "path"], where="stage = 'vector'",
                                          paths=()) if p.startswith(key + "#") and int(p.rsplit("#", 1)[1]) >= start]
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
            for f in _parquet(p.meta).schema_arrow:
                if f.name != p.column and not pa.types.is_list(f.type) and not pa.types.is_fixed_size_list(f.type):
                    extra.setdefault(f.name, f.type)
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
        for s, x, why, tx, meta in _blocks(p, batch_rows):
            if s + len(x) <= start:
                continue
            if s < start:  # a block straddling the checkpoint (another block size than the interrupted run's)
                cut = start - s
                x, why = x[cut:], why[cut:] if why is not None else None
                tx, meta = (tx[cut:] if tx is not None else None), (meta.slice(cut) if meta is not None else None)
                s = start
            _commit(index, schema, p, s, x, why, tx, meta, summary)
            progress.record(p, s + len(x))
            if on_progress is not None:
                on_progress(Progress("vectors", rows_done + s + len(x), total,
                                     {"added": summary.added, "errors": summary.errors}, time.monotonic() - t0))
        rows_done += p.rows
    summary.elapsed = finish_run(index, (TABLE,), summary.added > 0, True, t0)
    return summary


def _commit(index, schema, part, start, x, why, tx, meta, summary) -> None:
    m_all = len(x)
    code = bad_vectors(x)
    reasons = ["vector has NaN or infinite values" if c == 1 else "vector is all zeros" if c == 2 else None
               for c in code.tolist()]
    if why is not None:
        reasons = [w or r for w, r in zip(why, reasons)]
    ok = np.array([r is None for r in reasons], bool) if m_all else np.zeros(0, bool)
    if (~ok).any():
        bad = np.nonzero(~ok)[0]
        for i in bad:
            summary.error_reasons[reasons[i]] = summary.error_reasons.get(reasons[i], 0) + 1
        index.add_rows("errors", error_table(index, TABLE, [Failure(f"{part.path}#{start + i}", "vector", reasons[i])
                                                            for i in bad]))
        summary.errors += len(bad)
    if not ok.any():
        return
    keep = np.nonzero(ok)[0]
    xv = x[keep] / np.linalg.norm(x[keep], axis=1, keepdims=True)
    m = len(keep)
    cols = {"id": pa.array(index.next_ids(TABLE, m)), "vector": vectors_to_arrow(xv, index.dim),
            "source_file": pa.array([stored_path(part.path)] * m), "source_row": pa.array(start + keep, pa.int64())}
    if tx is not None:
        t = np.array(tx[keep], np.float32)
        tbad = bad_vectors(t) != 0  # a bad caption vector becomes a null text_vector
        t[tbad] = 0
        norms = np.linalg.norm(t, axis=1)
        norms[tbad] = 1
        t = t / norms[:, None]
        cols["text_vector"] = pa.FixedSizeListArray.from_arrays(pa.array(t.astype(np.float32).reshape(-1)), index.dim,
                                                                mask=pa.array(tbad))
    meta = meta.take(pa.array(keep)) if meta is not None else None
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

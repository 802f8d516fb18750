"""Bring your own embeddings: index precomputed vectors (no model run) into the ``images`` table.

Sources (checked whole before the index is touched: dimensions, metadata row counts):

- clip-retrieval's inference layout: ``img_emb/img_emb_{i}.npy``, optional ``text_emb/text_emb_{i}.npy`` (the
  captions' vectors -> ``text_vector``) and ``metadata/metadata_{i}.parquet`` (row j describes vector j);
- a folder of ``.npy`` files, each with an optional ``<same name>.parquet`` of metadata;
- Parquet files with a fixed- or variable-size list vector column (``vector``, ``embedding``, ``emb``,
  ``image_embedding``, or ``column=``) and metadata columns.

Everything is streamed (``np.load(mmap_mode="r")`` slices, pyarrow ``iter_batches``). Vectors with NaN/inf values
or zero norm are rejected into the ``errors`` table (path ``FILE#ROW``, stage ``vector``), never normalised into
noise; the others are L2-normalised. A file already indexed (same path) is skipped on later runs.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from retrieval.errors import InvalidInput
from retrieval.index.directory import Index, now
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
    added: int = 0
    errors: int = 0
    elapsed: float = 0.0
    error_reasons: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _npy_shape(path: Path) -> tuple[int, ...]:
    try:
        return np.load(path, mmap_mode="r").shape
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: not a readable .npy array ({exc})") from None


def _vector_column(schema: pa.Schema, path: Path, column: str | None) -> tuple[str, int]:
    names = [column] if column else [n for n in VECTOR_NAMES if n in schema.names]
    for name in names:
        if name in schema.names:
            t = schema.field(name).type
            if pa.types.is_fixed_size_list(t):
                return name, t.list_size
            if pa.types.is_list(t) or pa.types.is_large_list(t):
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
            pf = pq.ParquetFile(f)
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
            m = pq.ParquetFile(p.meta).metadata.num_rows
            if m < p.rows:
                raise InvalidInput(f"{p.meta} has {m} metadata rows for the {p.rows} vectors of {p.path}: "
                                   f"{p.rows - m} rows are missing")
        if p.text_npy:
            tshape = _npy_shape(Path(p.text_npy))
            if tshape != (p.rows, dim):
                raise InvalidInput(f"{p.text_npy} has shape {tshape}; expected {(p.rows, dim)} to match {p.path}")
    return parts


def _blocks(part: Part, rows: int) -> Iterator[tuple[int, np.ndarray, np.ndarray | None, pa.Table | None]]:
    """(start row, vectors (b, d), caption vectors or None, metadata rows or None), streamed."""
    if part.npy:
        x = np.load(part.npy, mmap_mode="r")
        tx = np.load(part.text_npy, mmap_mode="r") if part.text_npy else None
        meta_iter = pq.ParquetFile(part.meta).iter_batches(batch_size=rows) if part.meta else None
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
            yield s, np.asarray(x[s:s + b], np.float32), (np.asarray(tx[s:s + b], np.float32) if tx is not None
                                                          else None), meta
        return
    s = 0
    for rb in pq.ParquetFile(part.meta).iter_batches(batch_size=rows):
        col = rb.column(rb.schema.get_field_index(part.column))
        flat = col.flatten().to_numpy(zero_copy_only=False) if col.null_count == 0 else None
        if flat is None or len(flat) != len(rb) * part.dim:
            raise InvalidInput(f"{part.path}: rows of {part.column!r} are null or not all {part.dim}-dimensional")
        meta = pa.Table.from_batches([rb]).drop_columns([part.column])
        yield s, np.asarray(flat, np.float32).reshape(-1, part.dim), None, meta
        s += len(rb)


def bad_vectors(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n,) reason codes: 0 fine, 1 NaN/inf, 2 zero norm."""
    finite = np.isfinite(x).all(1)
    norms = np.linalg.norm(np.where(np.isfinite(x), x, 0), axis=1)
    return np.where(~finite, 1, np.where(norms == 0, 2, 0))


def index_embeddings(index: Index, parts: list[Part], batch_rows: int = 65536, on_progress=None) -> EmbeddingSummary:
    """Add every part not indexed yet; returns the run's summary."""
    t0 = time.monotonic()
    summary = EmbeddingSummary()
    if parts[0].dim != index.dim:
        raise InvalidInput(f"the embeddings are {parts[0].dim}-dimensional; this index holds {index.dim}-d vectors")
    done_files = set()
    if index.store.has_table(TABLE) and "source_file" in index.store.schema(TABLE).names:
        for b in index.store.scan(TABLE, ["source_file"]):
            done_files.update(v for v in b.column(0).to_pylist() if v)
    extra = {"source_file": pa.string(), "source_row": pa.int64()}
    for p in parts:
        if p.meta:
            for f in pq.read_schema(p.meta):
                if f.name != p.column and not pa.types.is_list(f.type) and not pa.types.is_fixed_size_list(f.type):
                    extra.setdefault(f.name, f.type)
    base = {"id", "path", "width", "height", "bytes", "mtime", "hash", "caption", "label", "vector", "text_vector"}
    schema = index.ensure_table(TABLE, [pa.field(k, v) for k, v in extra.items() if k not in base])
    index.ensure_table("errors")
    for p in parts:
        if p.path in done_files:
            summary.skipped_files += 1
            continue
        summary.files += 1
        for start, x, tx, meta in _blocks(p, batch_rows):
            _commit(index, schema, p, start, x, tx, meta, summary)
            if on_progress is not None:
                on_progress(summary)
    if summary.added:
        index.optimize(TABLE)
    summary.elapsed = time.monotonic() - t0
    return summary


def _commit(index, schema, part, start, x, tx, meta, summary) -> None:
    n = len(x)
    code = bad_vectors(x)
    ok = code == 0
    if (~ok).any():
        bad = np.nonzero(~ok)[0]
        reasons = ["vector has NaN or infinite values" if code[i] == 1 else "vector is all zeros" for i in bad]
        for r in reasons:
            summary.error_reasons[r] = summary.error_reasons.get(r, 0) + 1
        err = pa.table({"id": index.next_ids("errors", len(bad)), "path": [f"{part.path}#{start + i}" for i in bad],
                        "stage": ["vector"] * len(bad), "reason": reasons, "when": [now()] * len(bad),
                        "bytes": pa.nulls(len(bad), pa.int64()), "mtime": pa.nulls(len(bad), pa.float64()),
                        "source_table": [TABLE] * len(bad)}, schema=index.store.schema("errors"))
        index.add_rows("errors", err)
        summary.errors += len(bad)
    if not ok.any():
        return
    keep = np.nonzero(ok)[0]
    xv = x[keep] / np.linalg.norm(x[keep], axis=1, keepdims=True)
    m = len(keep)
    cols = {"id": pa.array(index.next_ids(TABLE, m)), "vector": vectors_to_arrow(xv, index.dim),
            "source_file": pa.array([part.path] * m), "source_row": pa.array(start + keep, pa.int64())}
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
            src = pa.array([f"{part.path}#{start + i}" for i in keep])
        try:
            cols[f.name] = src.cast(f.type) if src is not None else pa.nulls(m, f.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cols[f.name] = pa.nulls(m, f.type)
    index.add_rows(TABLE, pa.table({f.name: cols[f.name] for f in schema}, schema=schema))
    summary.added += m

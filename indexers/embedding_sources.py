"""Precomputed embeddings on disk: find them, check them whole, and read them back in blocks.

Sources (checked whole before the index is touched: dimensions, metadata row counts):

- clip-retrieval's inference layout: ``img_emb/img_emb_{i}.npy``, optional ``text_emb/text_emb_{i}.npy`` (the
  captions' vectors -> ``text_vector``) and ``metadata/metadata_{i}.parquet`` (row j describes vector j);
- a folder of ``.npy`` files, each with an optional ``<same name>.parquet`` of metadata;
- Parquet files with a fixed- or variable-size list vector column (``vector``, ``embedding``, ``emb``,
  ``image_embedding``, or ``column=``) and metadata columns.

``discover_embeddings`` returns the sources' ``Part``s (one per file); ``blocks`` streams one part: ``.npy`` rows
read with plain file reads, Parquet through pyarrow's ``iter_batches``. Only real floating-point vectors
(float16/32/64) are embeddings: integers and booleans are refused, complex values would lose their imaginary part.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from retrieval.errors import InvalidInput

VECTOR_NAMES = ("vector", "embedding", "emb", "image_embedding", "img_emb")
NOT_2D = -2  # Part.dim of an .npy file that is not a (rows, dim) array (refused once all parts are known)
FIRST_ROW = -1  # Part.dim of a variable-size list column: read from its first row


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


# (start row, vectors (b, d), per-row problems or None, caption vectors (b, d) or None, metadata rows or None)
Block = tuple[int, np.ndarray, "list | None", "np.ndarray | None", "pa.Table | None"]


def discover_embeddings(src: str | Path, column: str | None = None) -> list[Part]:
    """The source's parts, validated: one dimension throughout, metadata with a row per vector."""
    src = Path(src).expanduser()
    if not src.exists():
        raise InvalidInput(f"{src} does not exist")
    clip_layout = (src / "img_emb").is_dir()
    if src.is_file() or (not any(src.glob("*.npy")) and not clip_layout):
        files = [src] if src.is_file() else sorted(src.glob("*.parquet"))
        parts = [_file_part(f, column) for f in files]
    else:
        parts = _npy_folder_parts(src, clip_layout)
    if not parts:
        raise InvalidInput(f"{src}: no .npy or Parquet embeddings found")
    _check_parts(parts)
    return parts


def _file_part(f: Path, column: str | None) -> Part:
    """A named .npy file, or a Parquet file with a vector column."""
    if f.suffix == ".npy":
        shape = _npy_shape(f)
        return Part(str(f), shape[0], shape[-1] if len(shape) == 2 else NOT_2D, npy=str(f))
    pf = open_parquet(str(f))
    name, dim = _vector_column(pf.schema_arrow, f, column)
    if dim == FIRST_ROW:
        first = next(pf.iter_batches(batch_size=1, columns=[name]), None)
        dim = len(first.column(0)[0].as_py()) if first is not None and len(first) else 0
    return Part(str(f), pf.metadata.num_rows, dim, meta=str(f), column=name)


def _npy_folder_parts(src: Path, clip_layout: bool) -> list[Part]:
    """clip-retrieval's layout (img_emb/, text_emb/, metadata/) or a folder of .npy files with optional Parquet
    metadata beside each."""
    if clip_layout:
        npys = sorted((src / "img_emb").glob("*.npy"))
        metas = sorted((src / "metadata").glob("*.parquet"))
        texts = sorted((src / "text_emb").glob("*.npy"))
        if metas and len(metas) != len(npys):
            raise InvalidInput(f"{src}: {len(npys)} img_emb files but {len(metas)} metadata files")
    else:
        npys, metas, texts = sorted(src.glob("*.npy")), [], []
    parts = []
    for i, f in enumerate(npys):
        shape = _npy_shape(f)
        if metas:
            meta = str(metas[i])
        else:
            beside = f.with_suffix(".parquet")
            meta = str(beside) if beside.is_file() else None
        text = str(texts[i]) if i < len(texts) else None
        dim = shape[1] if len(shape) == 2 else NOT_2D
        parts.append(Part(str(f), shape[0], dim, npy=str(f), text_npy=text, meta=meta))
    return parts


def _check_parts(parts: list[Part]) -> None:
    """One dimension throughout; an .npy's metadata and caption vectors have exactly one row per vector."""
    dim = parts[0].dim
    for p in parts:
        if p.dim == NOT_2D:
            raise InvalidInput(f"{p.path}: expected a 2-d (rows, dim) array")
        if p.dim != dim:
            raise InvalidInput(f"dimension mismatch: {parts[0].path} has {dim}-d vectors, {p.path} has {p.dim}-d")
        if p.meta and p.npy:
            m = open_parquet(p.meta).metadata.num_rows
            if m != p.rows:  # row j of the metadata describes vector j: any other count pairs the wrong rows
                what = f"{p.rows - m} rows are missing" if m < p.rows else f"{m - p.rows} rows too many"
                raise InvalidInput(f"{p.meta} has {m} metadata rows for the {p.rows} vectors of {p.path}: {what}")
        if p.text_npy:
            tshape = _npy_shape(Path(p.text_npy))
            if tshape != (p.rows, dim):
                raise InvalidInput(f"{p.text_npy} has shape {tshape}; expected {(p.rows, dim)} to match {p.path}")


def _npy_shape(path: Path) -> tuple[int, ...]:
    """The shape of an ``.npy`` file of real floating-point values (float16/32/64); any other dtype is refused."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: not a readable .npy array ({exc})") from None
    _check_float(arr.dtype, path)
    return arr.shape


def _check_float(dtype, path) -> None:
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise InvalidInput(f"{path}: holds {np.dtype(dtype).name} values; "
                           "embeddings must be float16, float32 or float64")


def _vector_column(schema: pa.Schema, path: Path, column: str | None) -> tuple[str, int]:
    """The Parquet vector column and its dimension (``FIRST_ROW`` for a variable-size list)."""
    names = [column] if column else [n for n in VECTOR_NAMES if n in schema.names]
    for name in names:
        if name in schema.names:
            t = schema.field(name).type
            listed = pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)
            if listed and not pa.types.is_floating(t.value_type):
                raise InvalidInput(f"{path}: vector column {name!r} holds {t.value_type} values; "
                                   "embeddings must be float16, float32 or float64")
            if pa.types.is_fixed_size_list(t):
                return name, t.list_size
            if listed:
                return name, FIRST_ROW
    raise InvalidInput(f"{path}: no vector column (looked for {', '.join(names)}); name it with --column")


def blocks(part: Part, rows: int) -> Iterator[Block]:
    """The part in blocks of ``rows`` rows, from its first row (see ``Block``)."""
    if part.npy:
        yield from _npy_blocks(part, rows)
        return
    s = 0
    for rb in open_parquet(part.meta).iter_batches(batch_size=rows):
        x, why = _vector_rows(rb.column(rb.schema.get_field_index(part.column)), part.dim)
        meta = pa.Table.from_batches([rb]).drop_columns([part.column])
        yield s, x, why, None, meta
        s += len(rb)


def _npy_blocks(part: Part, rows: int) -> Iterator[Block]:
    x = NpyRows(part.npy)
    tx = NpyRows(part.text_npy) if part.text_npy else None
    meta_iter = open_parquet(part.meta).iter_batches(batch_size=rows) if part.meta else None
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
        captions = np.asarray(tx[s:s + b], np.float32) if tx is not None else None
        yield s, np.asarray(x[s:s + b], np.float32), None, captions, meta


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


class NpyRows:
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


def half_precision(parts: list[Part]) -> bool:
    """Whether every part holds float16 vectors (clip-retrieval writes its ``.npy`` files so): stored as they are."""
    for p in parts:
        if p.npy:
            kind = np.load(p.npy, mmap_mode="r").dtype  # the header only
        else:
            kind = open_parquet(p.meta).schema_arrow.field(p.column).type.value_type.to_pandas_dtype()
        if np.dtype(kind) != np.float16:
            return False
    return bool(parts)


def open_parquet(path: str) -> pq.ParquetFile:
    """A Parquet file; one whose name is not UTF-8 is opened by us (pyarrow cannot open such a name)."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return pq.ParquetFile(open(path, "rb"))  # closed with the ParquetFile's last reference
    return pq.ParquetFile(path)

"""One block of precomputed embeddings -> the rows to store and the rows refused: what both engines of
``clipdex index embeddings`` write (the local one adds them itself, Ray's tasks write them as Lance fragments).

Vectors with NaN/inf values or zero norm are refused (path ``FILE#ROW``, stage ``vector``), never normalised into
noise, and so are the rows of a Parquet vector column that are null or of another length; the others are
L2-normalised. Caption vectors (``text_emb``) are normalised too, null where bad. Metadata columns are stored under
the shard/manifest rule (``a.b`` -> ``a_b``); ``path`` comes from a path-like metadata column, else ``FILE#ROW``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa

from indexers.common import Failure
from indexers.embedding_sources import Part
from retrieval.io.files import stored_path
from retrieval.io.shard_meta import column_name
from retrieval.store.base import vectors_to_arrow

TABLE = "images"
PATH_NAMES = ("path", "image_path", "url", "filepath", "file")
_REASONS = {0: None, 1: "vector has NaN or infinite values", 2: "vector is all zeros"}  # bad_vectors' codes


def bad_vectors(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n,) reason codes: 0 fine, 1 NaN/inf, 2 zero norm."""
    finite = np.isfinite(x).all(1)
    norms = np.linalg.norm(np.where(np.isfinite(x), x, 0), axis=1)
    return np.where(~finite, 1, np.where(norms == 0, 2, 0))


def block_rows(schema: pa.Schema, dim: int, part: Part, start: int, x: np.ndarray, why: list | None,
               tx: np.ndarray | None, meta: pa.Table | None,
               ids: Callable[[np.ndarray], np.ndarray]) -> tuple[pa.Table | None, list[Failure]]:
    """Block ``x`` (b, d) of ``part`` from row ``start`` (``why``: per-row problems the reader found; ``tx``
    (b, d) caption vectors; ``meta``: b metadata rows) -> (the kept rows in ``schema``, None when none; the
    refused rows' failures). ``ids(rows)`` gives the ids of the kept rows (their row numbers in the part)."""
    reasons = [_REASONS[c] for c in bad_vectors(x).tolist()]
    if why is not None:
        reasons = [w or r for w, r in zip(why, reasons)]
    ok = np.array([r is None for r in reasons], bool) if len(x) else np.zeros(0, bool)
    failures = [Failure(f"{part.path}#{start + i}", "vector", reasons[i]) for i in np.nonzero(~ok)[0]]
    if not ok.any():
        return None, failures
    keep = np.nonzero(ok)[0]
    xv = x[keep] / np.linalg.norm(x[keep], axis=1, keepdims=True)
    m = len(keep)
    cols = {
        "id": pa.array(np.asarray(ids(start + keep), np.int64)),
        "vector": vectors_to_arrow(xv, dim),
        "source_file": pa.array([stored_path(part.path)] * m),
        "source_row": pa.array(start + keep, pa.int64()),
    }
    if tx is not None:
        cols["text_vector"] = caption_vectors(np.array(tx[keep], np.float32), dim)
    meta = stored_names(meta.take(pa.array(keep))) if meta is not None else None
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
    return pa.table({f.name: cols[f.name] for f in schema}, schema=schema), failures


def from_row(block: tuple, start: int) -> tuple | None:
    """A block (``embedding_sources.Block``) cut to its rows from ``start`` on (None when it ends before): a block
    straddling a checkpoint that another block size left."""
    s, x, why, tx, meta = block
    if s + len(x) <= start:
        return None
    if s >= start:
        return block
    cut = start - s
    return (start, x[cut:], why[cut:] if why is not None else None, tx[cut:] if tx is not None else None,
            meta.slice(cut) if meta is not None else None)


def caption_vectors(t: np.ndarray, dim: int) -> pa.FixedSizeListArray:
    """(m, dim) caption vectors -> the ``text_vector`` column: normalised, null where a vector is bad."""
    tbad = bad_vectors(t) != 0
    t[tbad] = 0
    norms = np.linalg.norm(t, axis=1)
    norms[tbad] = 1
    t = t / norms[:, None]
    return pa.FixedSizeListArray.from_arrays(pa.array(t.astype(np.float32).reshape(-1)), dim, mask=pa.array(tbad))


def stored_names(meta: pa.Table) -> pa.Table:
    """Metadata columns under the names they are stored as (``retrieval.io.shard_meta.column_name``); a column that
    cannot be one, or that repeats an earlier one's name, is left out."""
    keep, names = [], []
    for i, n in enumerate(meta.column_names):
        name = column_name(n)[0]
        if name and name not in names:
            keep.append(i)
            names.append(name)
    return meta.select(keep).rename_columns(names)

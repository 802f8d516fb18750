"""Queries against an index: a text, an image (PIL or a file) or raw vectors; results as an Arrow table.

The result has one row per hit: ``rank`` (1-based), ``score`` (cosine), ``id`` and the row's columns without its
vectors; batched vector queries add a ``query`` column (the query's row number).
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import pyarrow as pa

from retrieval.encode.text import CLIP_WINDOW, encode_long_texts, query_strategy
from retrieval.encode.text_tower import query_tower
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index, open_index
from retrieval.io.imageprep import MAX_BYTES, ImageReadError, open_image, read_image_file
from retrieval.store.base import VECTOR_COLUMNS

DEFAULT_K = 10
log = logging.getLogger(__name__)


def load_query_image(path: str | os.PathLike, max_bytes: int = MAX_BYTES):
    """Open an image file for querying with the indexer's checks (a regular file of at most ``max_bytes``, never
    read further; FIFOs, devices and folders refused); ``InvalidInput`` when it is missing or not an image."""
    try:
        return open_image(read_image_file(os.fspath(path), max_bytes))
    except ImageReadError as exc:
        raise InvalidInput(f"query image {path}: {exc.reason}") from None


def query_vectors(index: Index, text: str | Sequence[str] | None = None, image=None, vectors=None,
                  long_text: str = "chunk", encoder=None, notes: dict | None = None) -> np.ndarray:
    """Turn one kind of query into (q, d) unit vectors with the index's model (or the given vectors).
    ``notes`` (a dict) receives what was done to a text query: query_n_tokens, query_strategy, query_note."""
    given = [x is not None for x in (text, image, vectors)]
    if sum(given) != 1:
        raise InvalidInput("give exactly one query: a text, an image or vectors")
    if vectors is not None:
        x = np.asarray(vectors, np.float32)
        x = x[None, :] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != index.dim:
            raise InvalidInput(f"query vectors have shape {x.shape}; this index holds {index.dim}-dimensional vectors")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if not np.isfinite(x).all() or (norms == 0).any():
            raise InvalidInput("query vectors contain NaN, infinite or zero rows")
        return x / norms
    enc = encoder or index.encoder()
    if encoder is not None:
        index.check_model(enc.spec)
    if text is not None:
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or any(not t.strip() for t in texts):
            raise InvalidInput("empty text query")
        res = encode_long_texts(enc, texts, long_text)
        log.info("text query: %s", res.describe(0))
        if notes is not None:
            notes.update(query_n_tokens=int(res.n_tokens[0]), query_strategy=res.strategy,
                         query_long=int(res.n_tokens[0]) > CLIP_WINDOW, query_note=res.describe(0))
        return res.vectors
    images = image if isinstance(image, (list, tuple)) else [image]
    images = [load_query_image(im) if isinstance(im, (str, os.PathLike)) else im for im in images]
    return enc.encode_images(images)


def text_query_encoder(index: Index, device: str | None = None, long_text: str | None = None,
                       table: str = "images"):
    """The encoder for text queries against ``table``: the model's exported text tower run with numpy when
    ``query_tower`` allows it (no torch import; the CPU encoder's vectors to 1e-4), else ``index.encoder``."""
    tower = None if getattr(index, "_encoder", None) else query_tower(index.manifest, table, long_text, device)
    return tower or index.encoder(device=device)


def rows_for_hits(index: Index, table: str, D: np.ndarray, I: np.ndarray, min_score: float | None = None,
                  with_query: bool = False) -> pa.Table:
    """(D, I) from a store search -> result table (rank, score, id, columns...), vectors left out."""
    keep = I >= 0
    if min_score is not None:
        keep &= D >= min_score
    qi, rank = np.nonzero(keep)
    ids = I[qi, rank]
    schema = index.store.schema(table)
    columns = [f.name for f in schema if f.name not in VECTOR_COLUMNS and not pa.types.is_fixed_size_list(f.type)]
    rows = index.store.take(table, np.unique(ids), columns)
    pos = {int(v): r for r, v in enumerate(rows.column("id").to_pylist())}
    order = pa.array([pos[int(v)] for v in ids], pa.int64())
    rows = rows.take(order)
    head = {"rank": pa.array(rank + 1, pa.int32()), "score": pa.array(D[qi, rank], pa.float32())}
    if with_query:
        head = {"query": pa.array(qi, pa.int32()), **head}
    out = pa.table(head)
    for name in rows.column_names:
        out = out.append_column(name, rows.column(name))
    return out


def search(index: Index | str, text: str | None = None, *, image=None, vectors=None, k: int = DEFAULT_K,
           table: str = "images", where: str | None = None, min_score: float | None = None,
           column: str = "vector", long_text: str | None = None, encoder=None) -> pa.Table:
    """Search ``table`` of ``index`` with a text, an image (PIL image or path) or (q, d) vectors.

    ``long_text`` (chunk | longclip | truncate): how a text query longer than the context is encoded; default: the
    strategy ``table`` was built with (a different one logs a warning). What was done is in the result's schema
    metadata (query_n_tokens, query_strategy, query_note).
    """
    if k < 1:
        raise InvalidInput(f"k must be at least 1, got {k}")
    if isinstance(index, (str, os.PathLike)):
        with open_index(index) as opened:  # opened here, closed here
            return search(opened, text, image=image, vectors=vectors, k=k, table=table, where=where,
                          min_score=min_score, column=column, long_text=long_text, encoder=encoder)
    long_text = query_strategy(index.manifest, table, long_text)
    notes: dict = {}
    xq = query_vectors(index, text, image, vectors, long_text, encoder, notes)
    D, I = index.search_vectors(table, xq, k, where=where, column=column)
    out = rows_for_hits(index, table, D, I, min_score, with_query=vectors is not None and len(xq) > 1)
    if notes:
        out = out.replace_schema_metadata({**(out.schema.metadata or {}), **{k: str(v) for k, v in notes.items()}})
    return out

"""Rows of the ``texts`` table, as both engines of ``clipdex index texts`` make them (the local one commits them,
Ray's actors write them as Lance fragments)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from indexers.text_sources import Row, TextFile
from indexers.text_state import TABLE
from retrieval.index.schemas import base_fields
from retrieval.io.files import stored_path
from retrieval.store.base import vectors_to_arrow


def text_rows(schema: pa.Schema, dim: int, strategy: str, rows: list[tuple[TextFile, Row, str]], ids,
              vectors: np.ndarray, n_tokens: np.ndarray, n_chunks: np.ndarray) -> pa.Table:
    """(file, row, text hash) triples with their ids (n,), vectors (n, dim) and token and window counts (n,) ->
    the table's rows in ``schema`` (metadata columns beyond the built-in ones from each row's ``meta``)."""
    n = len(rows)
    cols = {"id": pa.array(np.asarray(ids, np.int64)), "source": [stored_path(f.path) for f, _, _ in rows],
            "chunk": [r.chunk for _, r, _ in rows], "text": [r.text for _, r, _ in rows],
            "n_tokens": np.asarray(n_tokens).astype(np.int32), "n_chunks": np.asarray(n_chunks).astype(np.int32),
            "strategy": [strategy] * n, "hash": [h for _, _, h in rows],
            "mtime": [f.mtime for f, _, _ in rows], "bytes": [f.bytes for f, _, _ in rows],
            "vector": vectors_to_arrow(np.asarray(vectors, np.float32), dim)}
    base = {f.name for f in base_fields(TABLE, dim)}
    for name in schema.names:
        if name not in base:
            cols[name] = [r.meta.get(name) for _, r, _ in rows]
    return pa.table(cols, schema=schema)

"""The fixed columns of clipdex's tables; an indexer may add metadata columns after them.

``base_fields(table, dim)`` is the schema ``Index.ensure_table`` creates a table with. Every table starts with a
non-null int64 ``id``; the tables of embedded items carry a non-null ``vector`` (L2-normalised, ``dim`` float32).
A table clipdex does not know (the raw-vector API: ``Index.add_vectors("my_table", ...)``) gets only those two.
"""
from __future__ import annotations

import pyarrow as pa

from retrieval.store.base import vector_type

ID = pa.field("id", pa.int64(), nullable=False)


def base_fields(table: str, dim: int, half: bool = False) -> list[pa.Field]:
    """The fixed columns of ``table`` for ``dim``-dimensional vectors, in their stored order; ``half``: the vector
    columns hold float16 (an import of float16 embeddings, as clip-retrieval writes them)."""
    vector = pa.field("vector", vector_type(dim, half), nullable=False)
    if table == "images":
        return [
            ID,
            pa.field("path", pa.string()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("bytes", pa.int64()),
            pa.field("mtime", pa.float64()),
            pa.field("hash", pa.string()),
            pa.field("caption", pa.string()),
            pa.field("label", pa.string()),
            vector,
            pa.field("text_vector", vector_type(dim, half), nullable=True),  # the caption's embedding, if any
        ]
    if table == "frames":  # one row per sampled frame
        return [
            ID,
            pa.field("video_id", pa.int64()),  # the id of its row in ``videos``
            pa.field("path", pa.string()),
            pa.field("frame_index", pa.int64()),
            pa.field("t", pa.float64()),  # seconds from the start of the video
            vector,
        ]
    if table == "videos":  # vector = norm(mean of the video's frame vectors)
        return [
            ID,
            pa.field("path", pa.string()),
            pa.field("duration", pa.float64()),
            pa.field("fps", pa.float64()),
            pa.field("n_frames", pa.int32()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("bytes", pa.int64()),
            pa.field("mtime", pa.float64()),
            pa.field("hash", pa.string()),
            pa.field("sampling", pa.string()),
            pa.field("partial", pa.bool_()),  # decoding stopped early: the frames before the failure are kept
            pa.field("caption", pa.string()),
            vector,
        ]
    if table == "texts":  # one row per document / paragraph / line / table row
        return [
            ID,
            pa.field("source", pa.string()),
            pa.field("chunk", pa.int64()),
            pa.field("text", pa.string()),
            pa.field("n_tokens", pa.int32()),
            pa.field("n_chunks", pa.int32()),
            pa.field("strategy", pa.string()),
            pa.field("hash", pa.string()),
            pa.field("mtime", pa.float64()),  # mtime and bytes: of the source file
            pa.field("bytes", pa.int64()),
            vector,
        ]
    if table == "shards":  # one row per shard fully indexed
        return [
            ID,
            pa.field("path", pa.string()),
            pa.field("bytes", pa.int64()),  # size and mtime as read
            pa.field("mtime", pa.float64()),
            pa.field("samples", pa.int64()),
            pa.field("errors", pa.int64()),  # samples that failed
            pa.field("broken", pa.string()),  # why the tar broke, if it did
            pa.field("when", pa.string()),
        ]
    if table == "ocr":  # the text read in a picture (``clipdex index images --ocr``), one row per content hash
        return [
            ID,
            pa.field("hash", pa.string()),  # the content hash of the picture (``images.hash``)
            pa.field("path", pa.string()),  # the file it was read from
            pa.field("text", pa.string()),  # the lines read, one per line; "" when the picture holds no text
            pa.field("confidence", pa.float32()),  # the mean confidence of the lines (null without text)
            pa.field("boxes", pa.string()),  # JSON: [[x0, y0, x1, y1, x2, y2, x3, y3, line, confidence], ...]
            pa.field("lines", pa.int32()),
            pa.field("when", pa.string()),
        ]
    if table == "errors":  # one row per file (or sample) that could not be indexed
        return [
            ID,
            pa.field("path", pa.string()),
            pa.field("stage", pa.string()),
            pa.field("reason", pa.string()),
            pa.field("when", pa.string()),
            pa.field("bytes", pa.int64()),
            pa.field("mtime", pa.float64()),
            pa.field("source_table", pa.string()),  # the table whose indexer recorded it
        ]
    return [ID, vector]

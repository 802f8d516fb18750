"""The store interface: tables of rows with a stable int64 ``id``, unit-norm float32 vector columns and metadata.

Two backends implement it (``lance.py``, ``faiss.py``). Scores are inner products of unit vectors (cosine).
Search results follow faiss's convention: ``(D, I)`` = scores ``(q, k)`` float32 and ids ``(q, k)`` int64, each
row sorted by decreasing score and padded with ``-inf`` / ``-1`` when fewer than k rows qualify.
"""
from __future__ import annotations

import abc
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from retrieval.ann.config import AnnConfig
from retrieval.ann.tuning import sample_queries
from retrieval.errors import InvalidInput

VECTOR_COLUMNS = ("vector", "text_vector")


def vector_type(dim: int, half: bool = False) -> pa.DataType:
    """The stored vector column: float32, or float16 (``half``) for sources that are float16 already."""
    return pa.list_(pa.float16() if half else pa.float32(), dim)


def vectors_to_arrow(x: np.ndarray, dim: int) -> pa.Array:
    """(n, d) float32 -> FixedSizeList<float32, d> array."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim)


def arrow_to_vectors(col, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """FixedSizeList column (nulls allowed) -> ((m, d) float32 of the non-null rows, (n,) bool valid mask)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if col.null_count == 0:
        valid = np.ones(len(col), bool)
    else:
        valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False))
    if col.null_count:
        col = col.filter(pa.array(valid))
    flat = col.flatten() if len(col) else pa.array([], pa.float32())
    return np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim), valid


def check_queries(xq, dim: int) -> np.ndarray:
    """Queries as (q, d) contiguous float32; a single (d,) vector becomes (1, d)."""
    xq = np.asarray(xq, dtype=np.float32)
    if xq.ndim == 1:
        xq = xq[None, :]
    if xq.ndim != 2 or xq.shape[1] != dim:
        raise InvalidInput(f"query vectors have shape {xq.shape}; this index holds {dim}-dimensional vectors")
    if not np.isfinite(xq).all():
        raise InvalidInput("query vectors contain NaN or infinite values")
    return np.ascontiguousarray(xq)


class Store(abc.ABC):
    """Tables of rows keyed by ``id``. One writer at a time (the index directory holds the lock)."""

    dim: int
    half_vectors = False  # whether a table may store float16 vectors (``Index.ensure_table(half=True)``)

    @abc.abstractmethod
    def table_names(self) -> list[str]: ...

    def has_table(self, name: str) -> bool:
        return name in self.table_names()

    @abc.abstractmethod
    def create_table(self, name: str, schema: pa.Schema) -> None:
        """Create an empty table (no-op when it exists)."""

    @abc.abstractmethod
    def schema(self, name: str) -> pa.Schema: ...

    @abc.abstractmethod
    def add_columns(self, name: str, fields: Sequence[pa.Field]) -> None:
        """Add nullable columns to an existing table (schema evolution)."""

    @abc.abstractmethod
    def add(self, name: str, rows: pa.Table) -> None:
        """Append rows in one atomic commit: after a crash either all of them are there or none."""

    @abc.abstractmethod
    def delete(self, name: str, ids: Sequence[int]) -> int:
        """Delete rows by id; returns how many were deleted."""

    @abc.abstractmethod
    def count(self, name: str, where: str | None = None) -> int: ...

    @abc.abstractmethod
    def check_kind(self, kind: str):
        """Refuse (``InvalidInput``) an index kind this backend cannot build, before anything is touched."""

    @abc.abstractmethod
    def search(self, name: str, xq: np.ndarray, k: int, where: str | None = None, column: str = "vector",
               exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: xq (q, d) -> (D (q, k) float32, I (q, k) int64). With ``where`` the result holds
        k rows whenever at least k rows match. ``exact`` bypasses any ANN index."""

    @abc.abstractmethod
    def scan(self, name: str, columns: Sequence[str] | None = None, where: str | None = None,
             batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        """Stream rows (optionally filtered) in batches."""

    def take(self, name: str, ids: Sequence[int], columns: Sequence[str] | None = None) -> pa.Table:
        """Rows with the given ids, in the order given (missing ids are left out)."""
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            schema = self.schema(name)
            return schema.empty_table() if columns is None else schema.empty_table().select(list(columns))
        cols = None if columns is None else list(dict.fromkeys(["id", *columns]))
        parts = []
        uniq = np.unique(ids)
        for i in range(0, len(uniq), 4096):
            chunk = ",".join(str(int(v)) for v in uniq[i:i + 4096])
            parts.extend(self.scan(name, cols, where=f"id IN ({chunk})"))
        if parts:
            table = pa.Table.from_batches(parts)
        else:
            table = self.schema(name).empty_table().select(cols or self.schema(name).names)
        got = table.column("id").to_numpy()
        pos = {int(v): i for i, v in enumerate(got)}
        order = [pos[int(v)] for v in ids if int(v) in pos]
        table = table.take(pa.array(order, pa.int64()))
        return table if columns is None or "id" in columns else table.drop_columns(["id"])

    def iter_vectors(self, name: str, column: str = "vector", batch_rows: int = 65536, where: str | None = None
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream (ids (m,) int64, vectors (m, d) float32) of the rows whose ``column`` is not null (and that
        match ``where``)."""
        for batch in self.scan(name, ["id", column], where=where, batch_rows=batch_rows):
            x, valid = arrow_to_vectors(batch.column(1), self.dim)
            if len(x):
                yield batch.column(0).to_numpy()[valid].astype(np.int64), x

    def sample_vectors(self, name: str, rows: int, seed: int = 1, column: str = "vector"
                       ) -> tuple[np.ndarray, np.ndarray]:
        """``rows`` of the rows whose ``column`` is not null, drawn uniformly (all when fewer): (ids (m,) int64,
        vectors (m, d) float32) in table order. Here one streamed pass; a store with random access overrides it."""
        n = self.count(name) if column == "vector" else self.count(name, f"{column} IS NOT NULL")
        return sample_queries(self.iter_vectors(name, column), n, rows, self.dim, seed)

    def iter_vectors_clustered(self, name: str, batch_rows: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every vector of the table like ``iter_vectors``, in the order that makes a self-join cheapest: rows that
        lie together in the search structure come together (their searches probe and re-rank the same rows). The
        table's order here; a store whose structure keeps its vectors grouped streams them in that order."""
        yield from self.iter_vectors(name, batch_rows=batch_rows)

    def max_id(self, name: str) -> int:
        """Largest id the table holds, -1 when empty (a backend that never reuses ids returns the largest it
        ever held): new rows get ids above it."""
        best = -1
        for batch in self.scan(name, ["id"]):
            if len(batch):
                best = max(best, int(np.max(batch.column(0).to_numpy())))
        return best

    @abc.abstractmethod
    def optimize(self, name: str, ann: AnnConfig | None = None) -> dict:
        """Compact storage and build/refresh the ANN index as ``ann`` says; returns what was done (``"rebuilt"``
        True when a new ANN index was built: the index layer then tunes it). An unknown or unsupported
        ``ann.kind`` raises ``InvalidInput`` before anything is changed."""

    @abc.abstractmethod
    def ann_info(self, name: str) -> dict:
        """The table's search structure: {"kind": "flat"|..., "params": {...}}."""

    @abc.abstractmethod
    def ann_grid(self, name: str) -> dict[str, list]:
        """The search knobs tuning may try for the table's ANN index: name -> increasing values, the primary knob
        (nprobe, efSearch, nprobes) first; {} for a flat table."""

    @abc.abstractmethod
    def set_search_params(self, name: str, params: dict | None, record: dict | None = None,
                          persist: bool = True) -> None:
        """Search the table with ``params`` (knobs of its ``ann_grid``). ``persist`` False: for the calling thread's
        next searches only (tuning tries settings, a dedup run lowers them; other threads keep the table's own; None
        drops them); ``record``: what was measured (recall_at_10, target, note,
        candidates...), kept in the ANN record that ``ann_info`` returns."""

    def version(self, name: str):
        """A value that changes with every commit that changes ``name``'s rows (for caches of its contents); None
        when the backend cannot tell (then nothing is cached)."""
        return None

    def commit_fragments(self, name: str, fragments: Sequence[str]) -> int:
        """Append, in one commit, rows that other processes wrote as fragments of this backend's format (Ray's
        embedding actors); returns their row count. Only the Lance backend takes them."""
        raise InvalidInput(f"the {type(self).__name__} backend takes no rows written by other processes; "
                           "index with the Lance backend")

    def flush(self) -> None:  # noqa: B027 - an optional hook, a no-op unless a backend defers work
        """Persist derived structures (no-op for backends whose every commit is complete)."""

    def close(self) -> None:
        self.flush()

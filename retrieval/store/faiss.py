"""FAISS backend: Parquet parts hold the rows (vectors included), a FAISS index per vector column answers searches.

Layout under ``faiss/``::

    <table>.parquet/part-000001.parquet ...   the rows; pyarrow, polars or duckdb read the folder as one dataset
    <table>.state.json                         which parts are live, the table schema, the ANN choice
    <table>.faiss                              IndexIDMap2 over the ``vector`` column: FAISS ids are the row ids
    <table>.<column>.faiss                     the same for other vector columns (``text_vector``), non-null rows

The Parquet parts are the truth. Each ``add`` writes a new part and then commits the state file by an atomic
rename, so a crash loses at most the batch in flight. The FAISS files are derived: they are written on ``flush``
(and every ``flush_every`` seconds while adding), and on open their id set is checked against the Parquet ids;
a stale or missing FAISS file is repaired by adding the missing rows and removing the extra ones.
``faiss.read_index`` opens the files directly; ``index.search`` returns row ids.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import IndexFormatError, InvalidFilter, TableNotFound
from .base import AnnConfig, Store, arrow_to_vectors, check_queries, merge_topk

log = logging.getLogger(__name__)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _schema_to_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def _schema_from_b64(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def _vector_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if pa.types.is_fixed_size_list(f.type)]


class _Table:
    """In-memory handle of one table: its state file and lazily loaded FAISS indexes."""

    def __init__(self, root: Path, name: str):
        self.name = name
        self.state_path = root / f"{name}.state.json"
        self.parts_dir = root / f"{name}.parquet"
        state = json.loads(self.state_path.read_text())
        self.parts: list[str] = state["parts"]
        self.schema = _schema_from_b64(state["schema"])
        self.next_part: int = state.get("next_part", len(self.parts) + 1)
        self.ann: dict = state.get("ann", {"kind": "flat", "params": {}})
        self.indexes: dict = {}  # column -> faiss index
        self.tombstones: dict[str, np.ndarray] = {}  # column -> ids deleted from an index that cannot remove
        self.dirty: set[str] = set()
        self.count: int | None = None

    def save_state(self) -> None:
        state = {"parts": self.parts, "schema": _schema_to_b64(self.schema), "next_part": self.next_part,
                 "ann": self.ann}
        _atomic_write(self.state_path, json.dumps(state, indent=1).encode())

    def part_paths(self) -> list[str]:
        return [str(self.parts_dir / p) for p in self.parts]

    def new_part_name(self) -> str:
        name = f"part-{self.next_part:06d}-{uuid.uuid4().hex[:6]}.parquet"
        self.next_part += 1
        return name


class FaissStore(Store):
    def __init__(self, root: str | Path, dim: int, flush_every: float = 30.0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.flush_every = flush_every
        self._tables: dict[str, _Table] = {}
        self._last_flush = time.monotonic()
        self._con = None

    # -- tables ------------------------------------------------------------------------------------------------
    def table_names(self) -> list[str]:
        return sorted(p.name[: -len(".state.json")] for p in self.root.glob("*.state.json"))

    def _t(self, name: str) -> _Table:
        if name not in self._tables:
            if not (self.root / f"{name}.state.json").is_file():
                raise TableNotFound(f"this index has no table {name!r}; tables: {', '.join(self.table_names()) or 'none'}")
            self._tables[name] = _Table(self.root, name)
        return self._tables[name]

    def create_table(self, name: str, schema: pa.Schema) -> None:
        if (self.root / f"{name}.state.json").is_file():
            return
        (self.root / f"{name}.parquet").mkdir(exist_ok=True)
        state = {"parts": [], "schema": _schema_to_b64(schema), "next_part": 1, "ann": {"kind": "flat", "params": {}}}
        _atomic_write(self.root / f"{name}.state.json", json.dumps(state).encode())

    def schema(self, name: str) -> pa.Schema:
        return self._t(name).schema

    def add_columns(self, name: str, fields: Sequence[pa.Field]) -> None:
        t = self._t(name)
        for f in fields:
            t.schema = t.schema.append(pa.field(f.name, f.type, nullable=True))
        t.save_state()  # old parts lack the column: reads fill it with nulls

    def _read_part(self, t: _Table, part: str, columns: Sequence[str] | None = None) -> pa.Table:
        path = t.parts_dir / part
        cols = list(columns) if columns is not None else t.schema.names
        have = pq.read_schema(path).names
        table = pq.read_table(path, columns=[c for c in cols if c in have])
        for c in cols:
            if c not in have:
                table = table.append_column(t.schema.field(c), pa.nulls(len(table), t.schema.field(c).type))
        return table.select(cols)

    # -- FAISS indexes -----------------------------------------------------------------------------------------
    def _index_path(self, name: str, column: str) -> Path:
        return self.root / (f"{name}.faiss" if column == "vector" else f"{name}.{column}.faiss")

    def _new_index(self, t: _Table):
        import faiss

        kind = t.ann.get("kind", "flat")
        params = t.ann.get("params", {})
        if kind == "hnsw":
            base = faiss.IndexHNSWFlat(self.dim, int(params.get("M", 32)), faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = int(params.get("efConstruction", 80))
        else:
            base = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(base)

    def _ids_and_vectors(self, t: _Table, column: str, batch: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for part in t.parts:
            table = self._read_part(t, part, ["id", column])
            for rb in table.to_batches(batch):
                x, valid = arrow_to_vectors(rb.column(1), self.dim)
                ids = rb.column(0).to_numpy()[valid]
                if len(ids):
                    yield ids.astype(np.int64), x

    def _index(self, name: str, column: str):
        """The FAISS index of a vector column, loaded and checked against the Parquet ids (repaired if stale)."""
        import faiss

        t = self._t(name)
        if column in t.indexes:
            return t.indexes[column]
        if column not in _vector_columns(t.schema):
            raise TableNotFound(f"table {name!r} has no vector column {column!r}")
        path = self._index_path(name, column)
        index = None
        if path.is_file():
            try:
                index = faiss.read_index(str(path))
            except RuntimeError as exc:
                log.warning("rebuilding unreadable %s: %s", path.name, exc)
        if index is None or index.d != self.dim:
            index = self._new_index(t)
            have = np.zeros(0, np.int64)
        else:
            have = faiss.vector_to_array(index.id_map).astype(np.int64)
        truth = [ids for ids, _ in self._iter_ids(t, column)]
        truth = np.concatenate(truth) if truth else np.zeros(0, np.int64)
        extra = np.setdiff1d(have, truth)
        missing = np.setdiff1d(truth, have)
        t.indexes[column] = index
        if len(extra):
            self._remove(t, column, extra)
        if len(missing):
            for ids, x in self._ids_and_vectors(t, column):
                sel = np.isin(ids, missing)
                if sel.any():
                    index.add_with_ids(np.ascontiguousarray(x[sel]), ids[sel])
        if len(extra) or len(missing):
            log.info("repaired %s: +%d -%d rows", path.name, len(missing), len(extra))
            t.dirty.add(column)
        t.indexes[column] = index
        return index

    def _remove(self, t: _Table, column: str, ids: np.ndarray) -> None:
        """Remove ids from a FAISS index; graph indexes (HNSW) cannot, so their ids become tombstones that every
        search excludes until ``optimize`` rebuilds the index."""
        import faiss

        try:
            t.indexes[column].remove_ids(faiss.IDSelectorBatch(ids))
        except RuntimeError:
            old = t.tombstones.get(column, np.zeros(0, np.int64))
            t.tombstones[column] = np.union1d(old, ids)
        t.dirty.add(column)

    def _iter_ids(self, t: _Table, column: str):
        for part in t.parts:
            table = self._read_part(t, part, ["id", column])
            valid = table.column(1).is_valid().to_numpy(zero_copy_only=False) if table.column(1).null_count else None
            ids = table.column(0).to_numpy().astype(np.int64)
            yield (ids if valid is None else ids[valid]), None

    def flush(self) -> None:
        import faiss

        for name, t in self._tables.items():
            for column in sorted(t.dirty):
                faiss_path = self._index_path(name, column)
                tmp = faiss_path.with_name(f".{faiss_path.name}.tmp")
                faiss.write_index(t.indexes[column], str(tmp))
                os.replace(tmp, faiss_path)
            t.dirty.clear()
        self._last_flush = time.monotonic()

    # -- writes ------------------------------------------------------------------------------------------------
    def add(self, name: str, rows: pa.Table) -> None:
        if not len(rows):
            return
        t = self._t(name)
        rows = rows.select(t.schema.names).cast(t.schema)
        indexes = {c: self._index(name, c) for c in _vector_columns(t.schema)}  # load before the part exists
        part = t.new_part_name()
        tmp = t.parts_dir / f".{part}.tmp"
        pq.write_table(rows, tmp, compression="zstd")
        os.replace(tmp, t.parts_dir / part)
        t.parts.append(part)
        t.save_state()  # the commit point
        ids = rows.column("id").to_numpy().astype(np.int64)
        for column, index in indexes.items():
            x, valid = arrow_to_vectors(rows.column(column), self.dim)
            if len(x):
                index.add_with_ids(np.ascontiguousarray(x), ids[valid])
                t.dirty.add(column)
        t.count = None
        if time.monotonic() - self._last_flush > self.flush_every:
            self.flush()

    def delete(self, name: str, ids: Sequence[int]) -> int:
        import faiss

        ids = np.unique(np.asarray(ids, np.int64))
        if not len(ids):
            return 0
        t = self._t(name)
        indexes = {c: self._index(name, c) for c in _vector_columns(t.schema)}
        deleted, new_parts, gone = 0, [], []
        for part in t.parts:
            table = self._read_part(t, part)
            keep = ~np.isin(table.column("id").to_numpy(), ids)
            if keep.all():
                new_parts.append(part)
                continue
            deleted += int((~keep).sum())
            gone.append(part)
            if keep.any():
                fresh = t.new_part_name()
                tmp = t.parts_dir / f".{fresh}.tmp"
                pq.write_table(table.filter(pa.array(keep)), tmp, compression="zstd")
                os.replace(tmp, t.parts_dir / fresh)
                new_parts.append(fresh)
        if not gone:
            return 0
        t.parts = new_parts
        t.save_state()
        for part in gone:
            (t.parts_dir / part).unlink(missing_ok=True)
        for column in indexes:
            self._remove(t, column, ids)
        t.count = None
        return deleted

    # -- reads -------------------------------------------------------------------------------------------------
    def _duck(self):
        if self._con is None:
            import duckdb

            self._con = duckdb.connect()
        return self._con

    def _sql(self, t: _Table, select: str, where: str | None):
        if not t.parts:
            return None
        if where and ";" in where:
            raise InvalidFilter(f"bad --where expression {where!r}: ';' is not allowed")
        files = ", ".join("'" + p.replace("'", "''") + "'" for p in t.part_paths())
        sql = f"SELECT {select} FROM read_parquet([{files}], union_by_name=true)"
        if where:
            sql += f" WHERE ({where})"
        try:
            return self._duck().sql(sql)
        except Exception as exc:  # duckdb's parser and binder errors
            msg = str(exc).splitlines()[0]
            raise InvalidFilter(f"bad --where expression {where!r}: {msg[:200]}") from exc

    def _matching_ids(self, t: _Table, where: str) -> np.ndarray:
        rel = self._sql(t, "id", where)
        if rel is None:
            return np.zeros(0, np.int64)
        return np.asarray(rel.fetchnumpy()["id"], np.int64)

    def count(self, name: str, where: str | None = None) -> int:
        t = self._t(name)
        if where:
            return len(self._matching_ids(t, where))
        if t.count is None:
            t.count = sum(pq.ParquetFile(p).metadata.num_rows for p in t.part_paths())
        return t.count

    def scan(self, name: str, columns: Sequence[str] | None = None, where: str | None = None,
             batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        t = self._t(name)
        cols = list(columns) if columns is not None else t.schema.names
        if where:
            ids = self._matching_ids(t, where)
            if not len(ids):
                return
        for part in t.parts:
            table = self._read_part(t, part, list(dict.fromkeys(["id", *cols])))
            if where:
                table = table.filter(pa.array(np.isin(table.column("id").to_numpy(), ids)))
            table = table.select(cols)
            for rb in table.to_batches(batch_rows):
                if len(rb):
                    yield rb

    def search(self, name: str, xq: np.ndarray, k: int, where: str | None = None, column: str = "vector",
               exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        xq = check_queries(xq, self.dim)
        t = self._t(name)
        index = self._index(name, column)
        q = len(xq)
        if k <= 0 or index.ntotal == 0:
            return np.full((q, max(k, 0)), -np.inf, np.float32), np.full((q, max(k, 0)), -1, np.int64)
        kind = t.ann.get("kind", "flat")
        if where is None and (kind == "flat" or not exact):
            tomb = t.tombstones.get(column)
            inner = faiss.IDSelectorBatch(tomb) if tomb is not None and len(tomb) else None
            sel = faiss.IDSelectorNot(inner) if inner is not None else None  # `inner` must outlive the search
            params = self._search_params(t, sel)
            D, I = index.search(xq, k, params=params) if params is not None else index.search(xq, k)
            return self._clean(D, I)
        allowed = self._matching_ids(t, where) if where else None
        sel = faiss.IDSelectorBatch(allowed) if allowed is not None else None  # kept alive through the search
        if allowed is not None and kind == "flat":
            D, I = index.search(xq, k, params=faiss.SearchParameters(sel=sel))
            return self._clean(D, I)
        if allowed is not None and not exact and len(allowed) > 50_000:
            params = self._search_params(t, sel)
            D, I = self._clean(*index.search(xq, k, params=params))
            short = (I < 0).sum(1) > 0
            if not (short & (np.sum(I >= 0, 1) < min(k, len(allowed)))).any():
                return D, I
        return self._exact(t, column, xq, k, allowed)

    def _search_params(self, t: _Table, sel=None):
        import faiss

        params = t.ann.get("params", {})
        if t.ann.get("kind") == "hnsw":
            p = faiss.SearchParametersHNSW()
            p.efSearch = int(params.get("efSearch", 64))
            if sel is not None:
                p.sel = sel
            return p
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def _exact(self, t: _Table, column: str, xq: np.ndarray, k: int, allowed: np.ndarray | None):
        """Brute force over the Parquet vectors (only ``allowed`` ids when given): the exact oracle."""
        q = len(xq)
        D = np.full((q, k), -np.inf, np.float32)
        I = np.full((q, k), -1, np.int64)
        for ids, x in self._ids_and_vectors(t, column):
            if allowed is not None:
                sel = np.isin(ids, allowed)
                ids, x = ids[sel], x[sel]
            if len(ids):
                S = xq @ x.T
                D, I = merge_topk(np.concatenate([D, S], 1), np.concatenate([I, np.broadcast_to(ids, S.shape)], 1), k)
        return D, I

    @staticmethod
    def _clean(D, I):
        D = np.asarray(D, np.float32).copy()
        I = np.asarray(I, np.int64)
        D[I < 0] = -np.inf
        return D, I

    # -- maintenance -------------------------------------------------------------------------------------------
    def ann_info(self, name: str) -> dict:
        t = self._t(name)
        return {"kind": t.ann.get("kind", "flat"), "params": dict(t.ann.get("params", {}))}

    def set_search_params(self, name: str, params: dict) -> None:
        t = self._t(name)
        t.ann = {**t.ann, "params": {**t.ann.get("params", {}), **params}}
        t.save_state()

    def optimize(self, name: str, ann: AnnConfig | None = None, target_rows: int = 262_144) -> dict:
        ann = ann or AnnConfig()
        t = self._t(name)
        done: dict = {}
        small = [p for p in t.parts if pq.ParquetFile(t.parts_dir / p).metadata.num_rows < target_rows // 4]
        if len(small) > 1:
            merged = pa.concat_tables([self._read_part(t, p) for p in small])
            fresh = t.new_part_name()
            tmp = t.parts_dir / f".{fresh}.tmp"
            pq.write_table(merged, tmp, compression="zstd")
            os.replace(tmp, t.parts_dir / fresh)
            t.parts = [p for p in t.parts if p not in small] + [fresh]
            t.save_state()
            for p in small:
                (t.parts_dir / p).unlink(missing_ok=True)
            done["compacted_parts"] = len(small)
        n = self.count(name)
        want = "flat" if ann.kind == "flat" or n < ann.exact_below else ("hnsw" if ann.kind == "auto" else ann.kind)
        if want != t.ann.get("kind", "flat"):
            if want not in ("flat", "hnsw"):
                raise IndexFormatError(f"unknown FAISS index kind {want!r}")
            t.ann = {"kind": want, "params": {"M": 32, "efConstruction": 80, "efSearch": 64, **ann.params}}
            t.save_state()
            for column in _vector_columns(t.schema):
                t.indexes.pop(column, None)
                t.tombstones.pop(column, None)
                self._index_path(name, column).unlink(missing_ok=True)
                self._index(name, column)  # rebuilds from the Parquet rows
            done["ann"] = t.ann
        for p in t.parts_dir.glob(".*.tmp"):  # leftovers of a crash
            p.unlink(missing_ok=True)
        self.flush()
        return done

    def close(self) -> None:
        self.flush()
        if self._con is not None:
            self._con.close()
            self._con = None

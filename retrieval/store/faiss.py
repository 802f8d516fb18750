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

ANN indexes (HNSW, IVF-flat, IVF-SQ8, IVF fast-scan PQ with refinement; see ``retrieval/ann/structures.py``) index the ``vector``
column only. Rows added after the ANN index was built go to an in-memory flat *delta* index, searched exactly and
merged; rows deleted since are *tombstones*, over-fetched and filtered out. Both are derived on open from the
Parquet ids (ids in the Parquet parts but not in the index / in the index but not in the parts) and folded in by
``optimize``.
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

from retrieval.errors import IndexFormatError, InvalidFilter, TableNotFound
from retrieval.ann import structures as faiss_ann
from retrieval.store.base import AnnConfig, Store, arrow_to_vectors, check_queries, merge_topk

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
        self.dirty: set[str] = set()
        self.count: int | None = None
        self.delta = None                         # flat IDMap2 of rows added after the ANN build (vector column)
        self.tomb = np.zeros(0, np.int64)         # ids in the ANN index deleted since (sorted)
        self.override: dict | None = None         # search params set for this process only (tuning)
        self.gpu: dict = {}                       # column -> GPU copy used for searching

    @property
    def is_ann(self) -> bool:
        return self.ann.get("kind", "flat") != "flat"

    def uses_ann(self, column: str) -> bool:
        return self.is_ann and column == "vector"

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

    def _new_index(self, t: _Table, column: str):
        import faiss

        if t.uses_ann(column):
            return self._build_ann(t)
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _ids_and_vectors(self, t: _Table, column: str, batch: int = 65536,
                         only: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of the non-null rows, part by part (``only``: just these ids, parts without them skipped)."""
        for part in t.parts:
            if only is not None:
                pid = self._read_part(t, part, ["id"]).column(0).to_numpy()
                if not np.isin(pid, only).any():
                    continue
            table = self._read_part(t, part, ["id", column])
            for rb in table.to_batches(batch):
                x, valid = arrow_to_vectors(rb.column(1), self.dim)
                ids = rb.column(0).to_numpy()[valid].astype(np.int64)
                if only is not None:
                    sel = np.isin(ids, only)
                    ids, x = ids[sel], x[sel]
                if len(ids):
                    yield ids, x

    def _sample(self, t: _Table, column: str, rows: int, seed: int = 0) -> np.ndarray:
        """About ``rows`` vectors drawn uniformly from the table (training data), streamed."""
        n = self.count(t.name)
        p = min(1.0, rows / max(n, 1))
        rng = np.random.default_rng(seed)
        out = [x[rng.random(len(x)) < p] for _, x in self._ids_and_vectors(t, column)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def _build_ann(self, t: _Table):
        """Train and fill the ANN index of the vector column from the Parquet rows (the record in ``t.ann``)."""
        factory = faiss_ann.factory_of(t.ann, self.dim)
        build = t.ann.get("build", {})
        n = self.count(t.name)
        log.info("building %s over %d rows of %s", factory, n, t.name)
        sample = self._sample(t, "vector", int(build.get("train_rows", 50_000)))
        index = faiss_ann.build_index(factory, self.dim, sample, self._ids_and_vectors(t, "vector"), build)
        t.ann["built_rows"] = int(index.ntotal)
        t.delta, t.tomb = None, np.zeros(0, np.int64)
        t.dirty.add("vector")
        return index

    def _delta(self, t: _Table):
        import faiss

        if t.delta is None:
            t.delta = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        return t.delta

    def _index(self, name: str, column: str):
        """The FAISS index of a vector column, loaded and checked against the Parquet ids (repaired if stale).

        For an ANN index, rows missing from it go to the delta index and extra rows become tombstones; a flat
        index is repaired in place."""
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
            index = self._new_index(t, column)
            have = faiss.vector_to_array(index.id_map).astype(np.int64) if index.ntotal else np.zeros(0, np.int64)
        else:
            have = faiss.vector_to_array(index.id_map).astype(np.int64)
        truth = [ids for ids, _ in self._iter_ids(t, column)]
        truth = np.concatenate(truth) if truth else np.zeros(0, np.int64)
        extra = np.setdiff1d(have, truth)
        missing = np.setdiff1d(truth, have)
        if t.uses_ann(column):
            t.tomb = extra
            if len(missing):
                delta = self._delta(t)
                for ids, x in self._ids_and_vectors(t, column, only=missing):
                    delta.add_with_ids(np.ascontiguousarray(x), ids)
            if len(extra) or len(missing):
                log.info("%s: %d rows pending, %d deleted since the ANN build", name, len(missing), len(extra))
        else:
            if len(extra):
                sel = faiss.IDSelectorBatch(extra)
                index.remove_ids(sel)
            if len(missing):
                for ids, x in self._ids_and_vectors(t, column, only=missing):
                    index.add_with_ids(np.ascontiguousarray(x), ids)
            if len(extra) or len(missing):
                log.info("repaired %s: +%d -%d rows", path.name, len(missing), len(extra))
                t.dirty.add(column)
        t.indexes[column] = index
        return index

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
                if t.uses_ann(column):  # searched exactly until optimize folds it in
                    self._delta(t).add_with_ids(np.ascontiguousarray(x), ids[valid])
                    continue
                index.add_with_ids(np.ascontiguousarray(x), ids[valid])
                t.dirty.add(column)
                t.gpu.pop(column, None)
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
        for column, index in indexes.items():
            if t.uses_ann(column):  # tombstones until optimize; the delta index drops them at once
                have = faiss.vector_to_array(index.id_map)
                t.tomb = np.union1d(t.tomb, ids[np.isin(ids, have)])
                if t.delta is not None:
                    sel = faiss.IDSelectorBatch(ids)
                    t.delta.remove_ids(sel)
                continue
            sel = faiss.IDSelectorBatch(ids)
            index.remove_ids(sel)
            t.dirty.add(column)
            t.gpu.pop(column, None)
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
        n_delta = t.delta.ntotal if (t.delta is not None and t.uses_ann(column)) else 0
        if k <= 0 or index.ntotal + n_delta == 0:
            return np.full((q, max(k, 0)), -np.inf, np.float32), np.full((q, max(k, 0)), -1, np.int64)
        ann = t.uses_ann(column)
        allowed = self._matching_ids(t, where) if where else None
        if not ann:  # a flat index is exact already
            if allowed is None:
                return self._clean(*faiss_ann.search(self._searchable(t, column, index), xq, k, None))
            sel = faiss.IDSelectorBatch(allowed)  # must outlive the search
            params = faiss.SearchParameters(sel=sel)
            return self._clean(*index.search(xq, k, params=params))
        if exact or (allowed is not None and len(allowed) <= 50_000):
            return self._exact(t, column, xq, k, allowed)
        D, I = self._ann_search(t, index, xq, k, allowed)
        if allowed is not None:  # over-fetching may still come back short: answer those queries exactly
            short = np.sum(I >= 0, 1) < min(k, len(allowed))
            if short.any():
                D[short], I[short] = self._exact(t, column, xq[short], k, allowed)
        return D, I

    def _ann_search(self, t: _Table, index, xq: np.ndarray, k: int, allowed: np.ndarray | None = None):
        """ANN index (tombstones over-fetched and dropped) merged with the exact delta search: (q, k) D, I."""
        import faiss

        n = index.ntotal
        fetch = k + len(t.tomb)
        if allowed is not None:  # filtered: fetch enough that about k matching rows come back
            fetch = k * int(np.ceil(2 * n / max(len(allowed), 1))) + len(t.tomb)
        fetch = max(1, min(fetch, n))
        if n:
            D, I = self._clean(*faiss_ann.search(self._searchable(t, "vector", index), xq, fetch, self._params(t)))
            drop = np.isin(I, t.tomb) if len(t.tomb) else np.zeros(I.shape, bool)
            if allowed is not None:
                drop |= ~np.isin(I, allowed)
            D[drop], I[drop] = -np.inf, -1
        else:
            D, I = np.full((len(xq), 0), -np.inf, np.float32), np.full((len(xq), 0), -1, np.int64)
        if t.delta is not None and t.delta.ntotal:
            batch = faiss.IDSelectorBatch(allowed) if allowed is not None else None  # must outlive the search
            sel = faiss.SearchParameters(sel=batch) if batch is not None else None
            kd = min(k, t.delta.ntotal)
            Dd, Id = t.delta.search(xq, kd, params=sel) if sel is not None else t.delta.search(xq, kd)
            Dd, Id = self._clean(Dd, Id)
            D, I = np.concatenate([D, Dd], 1), np.concatenate([I, Id], 1)
        return merge_topk(D, I, k)

    def _params(self, t: _Table) -> faiss_ann.SearchParams:
        params = t.override if t.override is not None else t.ann.get("params", {})
        return faiss_ann.SearchParams(t.ann.get("kind", "flat"), params)

    def _searchable(self, t: _Table, column: str, index):
        kind = t.ann.get("kind", "flat") if t.uses_ann(column) else "flat"
        if faiss_ann.num_gpus() == 0:
            return index
        if column not in t.gpu:
            t.gpu[column] = faiss_ann.to_gpu_for_search(index, kind)
        return t.gpu[column]

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
        """The table's ANN record: kind, factory, build and search params, built_rows, tuning results; with
        ``pending_rows`` / ``deleted_rows`` when the index is loaded."""
        t = self._t(name)
        info = {**t.ann, "kind": t.ann.get("kind", "flat"), "params": dict(t.ann.get("params", {}))}
        if t.is_ann and "vector" in t.indexes:
            info["pending_rows"] = int(t.delta.ntotal) if t.delta is not None else 0
            info["deleted_rows"] = int(len(t.tomb))
        return info

    def set_search_params(self, name: str, params: dict, record: dict | None = None, persist: bool = True) -> None:
        """Search with ``params`` (nprobe, efSearch, k_factor); ``persist`` False: this process only (tuning).
        ``record``: extra keys (measured recall...) stored with the ANN record."""
        t = self._t(name)
        if not persist:
            t.override = dict(params)
            return
        t.override = None
        extra = {k: v for k, v in (record or {}).items() if k not in ("kind", "factory", "build", "params")}
        t.ann = {**t.ann, **extra, "params": dict(params)}
        t.save_state()

    def ann_grid(self, name: str) -> dict:
        """Search parameters tuning may try for the table's index (name -> increasing values)."""
        t = self._t(name)
        kind = t.ann.get("kind", "flat")
        if kind == "hnsw":
            return {"efSearch": [10, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]}
        if not kind.startswith("ivf"):
            return {}
        factory = faiss_ann.factory_of(t.ann, self.dim)
        nlist = int(t.ann.get("build", {}).get("nlist") or factory.split(",")[0][3:])
        grid = {"nprobe": [v for v in (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
                           if v <= nlist]}
        if "RFlat" in factory or "Refine" in factory:
            grid["k_factor"] = [1, 2, 4, 8, 16, 32, 64, 128]
        return grid

    def _compact(self, t: _Table, target_rows: int) -> int:
        small = [p for p in t.parts if pq.ParquetFile(t.parts_dir / p).metadata.num_rows < target_rows // 4]
        if len(small) <= 1:
            return 0
        merged = pa.concat_tables([self._read_part(t, p) for p in small])
        fresh = t.new_part_name()
        tmp = t.parts_dir / f".{fresh}.tmp"
        pq.write_table(merged, tmp, compression="zstd")
        os.replace(tmp, t.parts_dir / fresh)
        t.parts = [p for p in t.parts if p not in small] + [fresh]
        t.save_state()
        for p in small:
            (t.parts_dir / p).unlink(missing_ok=True)
        return len(small)

    def _wanted(self, name: str, ann: AnnConfig) -> dict:
        """The ANN record ``ann`` asks for: {"kind", "factory", "build", "params"}."""
        from retrieval.ann.plan import choose_index

        n = self.count(name)
        p = ann.params
        if ann.kind == "flat" or (ann.kind == "auto" and n < ann.exact_below):
            return {"kind": "flat", "factory": "Flat", "build": {}, "params": {}}
        kind = None if ann.kind == "auto" else ann.kind
        if kind is not None and kind not in ("hnsw", "ivf_flat", "ivf_sq8", "ivf_pq_fs"):
            raise IndexFormatError(f"unknown FAISS index kind {kind!r}")
        plan = choose_index(n, self.dim, p.get("memory"), p.get("recall", 0.95), ann.exact_below, kind)
        build = {**plan.build, **{k: v for k, v in p.get("build", {}).items()}}
        if "M" in p:  # older callers passed HNSW's build params at the top level
            build["M"] = p["M"]
        if "efConstruction" in p:
            build["efConstruction"] = p["efConstruction"]
        factory = p.get("factory") or (f"HNSW{int(build['M'])},Flat" if plan.kind == "hnsw" else plan.factory)
        search = {**plan.search, **{k: v for k, v in p.items() if k in ("nprobe", "efSearch", "k_factor")}}
        return {"kind": plan.kind, "factory": factory, "build": build, "params": search}

    def optimize(self, name: str, ann: AnnConfig | None = None, target_rows: int = 262_144) -> dict:
        """Compact small parts; build the ANN index ``ann`` asks for, or fold pending rows and deletions into the
        one there is (``ann.params["rebuild"]`` forces a rebuild)."""
        import faiss

        keep = ann is None and self._t(name).is_ann  # a plain optimize keeps the (tuned) index it finds
        ann = ann or AnnConfig()
        t = self._t(name)
        done: dict = {}
        compacted = self._compact(t, target_rows)
        if compacted:
            done["compacted_parts"] = compacted
        want = self._wanted(name, ann) if not keep else {"kind": t.ann["kind"], "factory": faiss_ann.factory_of(t.ann, self.dim)}
        same = (want["kind"] == t.ann.get("kind", "flat")
                and want["factory"] == faiss_ann.factory_of(t.ann, self.dim))
        if not same or ann.params.get("rebuild"):
            t.ann = {"kind": want["kind"], "factory": want["factory"], "build": want["build"],
                     "params": want["params"], "built_rows": 0}
            t.save_state()
            for column in _vector_columns(t.schema):
                t.indexes.pop(column, None)
                t.gpu.pop(column, None)
                self._index_path(name, column).unlink(missing_ok=True)
            t.delta, t.tomb = None, np.zeros(0, np.int64)
            for column in _vector_columns(t.schema):
                self._index(name, column)  # rebuilds from the Parquet rows
            t.save_state()
            done["ann"] = {k: t.ann[k] for k in ("kind", "factory", "build", "params")}
            done["rebuilt"] = True
            self.flush()
            from retrieval.ann.tuning import tune_after_build

            tune_after_build(self, name, ann, done)
        elif t.is_ann:
            index = self._index(name, "vector")
            folded = int(t.delta.ntotal) if t.delta is not None else 0
            if folded:  # add the pending rows to the ANN index (IVF lists / HNSW graph, no retraining)
                ids = faiss.vector_to_array(t.delta.id_map).astype(np.int64)
                x = t.delta.index.reconstruct_n(0, t.delta.ntotal)
                index.add_with_ids(np.ascontiguousarray(x), ids)
                t.delta = None
            removed = len(t.tomb)
            if removed:
                try:
                    sel = faiss.IDSelectorBatch(t.tomb)
                    index.remove_ids(sel)
                    t.tomb = np.zeros(0, np.int64)
                except RuntimeError:  # HNSW and fast-scan lists cannot remove: rebuild once deletions pile up
                    if removed > 0.1 * max(index.ntotal, 1):  # same index, built afresh
                        same_ann = AnnConfig(t.ann["kind"], 0, {"factory": faiss_ann.factory_of(t.ann, self.dim),
                                                                "build": t.ann.get("build", {}), "rebuild": True,
                                                                **t.ann.get("params", {})})
                        return {**done, **self.optimize(name, same_ann)}
                    removed = 0
            if folded or removed:
                t.dirty.add("vector")
                t.gpu.pop("vector", None)
                t.ann["built_rows"] = int(index.ntotal - len(t.tomb))
                t.save_state()
            done.update(folded_rows=folded, removed_rows=removed)
        for p in t.parts_dir.glob(".*.tmp"):  # leftovers of a crash
            p.unlink(missing_ok=True)
        self.flush()
        return done

    def close(self) -> None:
        self.flush()
        if self._con is not None:
            self._con.close()
            self._con = None

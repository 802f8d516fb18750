"""LanceDB backend (the default): one embedded Lance table per clipdex table, vectors and metadata together.

Every ``add`` and ``delete`` is one Lance commit (a new table version), so a crash loses at most the batch in
flight. Searches are exact (flat) until ``optimize`` builds a vector index; rows added after that are still found,
since Lance searches unindexed fragments exactly. Filtered searches pre-filter; if an ANN probe still comes back
short while at least k rows match, the query is re-run exactly.
"""
from __future__ import annotations

import logging
import math
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from ..errors import InvalidFilter, TableNotFound
from .base import AnnConfig, Store, check_queries, merge_topk

log = logging.getLogger(__name__)


def _filter_error(exc: Exception, where: str | None) -> Exception:
    msg = str(exc).splitlines()[0]
    if where and any(s in msg for s in ("parsing", "Schema error", "No field", "parser", "Invalid input", "type")):
        return InvalidFilter(f"bad --where expression {where!r}: {msg[:200]}")
    return exc


class LanceStore(Store):
    def __init__(self, root: str | Path, dim: int):
        import lancedb

        self.root = Path(root)
        self.dim = dim
        self.db = lancedb.connect(str(self.root))
        self._tables: dict = {}

    # -- tables ------------------------------------------------------------------------------------------------
    def table_names(self) -> list[str]:
        return list(self.db.table_names())

    def _t(self, name: str):
        if name not in self._tables:
            if name not in self.table_names():
                raise TableNotFound(f"this index has no table {name!r}; tables: {', '.join(self.table_names()) or 'none'}")
            self._tables[name] = self.db.open_table(name)
        return self._tables[name]

    def create_table(self, name: str, schema: pa.Schema) -> None:
        if name not in self.table_names():
            self._tables[name] = self.db.create_table(name, schema=schema)

    def schema(self, name: str) -> pa.Schema:
        return self._t(name).schema

    def add_columns(self, name: str, fields: Sequence[pa.Field]) -> None:
        self._t(name).add_columns(pa.schema(list(fields)))

    def add(self, name: str, rows: pa.Table) -> None:
        if len(rows):
            self._t(name).add(rows.select(self.schema(name).names))

    def delete(self, name: str, ids: Sequence[int]) -> int:
        ids = np.unique(np.asarray(ids, np.int64))
        if not len(ids):
            return 0
        table = self._t(name)
        before = table.count_rows()
        for i in range(0, len(ids), 8192):
            table.delete(f"id IN ({','.join(str(int(v)) for v in ids[i:i + 8192])})")
        return before - table.count_rows()

    def count(self, name: str, where: str | None = None) -> int:
        try:
            return self._t(name).count_rows(where) if where else self._t(name).count_rows()
        except ValueError as exc:
            raise _filter_error(exc, where) from exc

    def scan(self, name: str, columns: Sequence[str] | None = None, where: str | None = None,
             batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        query = self._t(name).search()
        if where:
            query = query.where(where)
        if columns is not None:
            query = query.select(list(columns))
        try:
            reader = query.limit(None).to_batches(batch_rows)
        except ValueError as exc:
            raise _filter_error(exc, where) from exc
        for batch in reader:
            if len(batch):
                yield batch

    # -- search ------------------------------------------------------------------------------------------------
    def search(self, name: str, xq: np.ndarray, k: int, where: str | None = None, column: str = "vector",
               exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        xq = check_queries(xq, self.dim)
        conds = [f"({where})"] if where else []
        if self.schema(name).field(column).nullable and column != "vector":
            conds.append(f"{column} IS NOT NULL")
        cond = " AND ".join(conds) or None
        D, I = self._query(name, xq, k, cond, column, exact)
        short = (I < 0).any(axis=1)
        if short.any() and not exact and self.ann_info(name)["kind"] != "flat":
            available = self.count(name, cond) if cond else self.count(name)
            if (np.sum(I[short] >= 0, axis=1) < min(k, available)).any():  # ANN probe missed matching rows
                D2, I2 = self._query(name, xq[short], k, cond, column, exact=True)
                D[short], I[short] = D2, I2
        return D, I

    def _query(self, name, xq, k, cond, column, exact):
        table = self._t(name)
        q = len(xq)
        D = np.full((q, k), -np.inf, np.float32)
        I = np.full((q, k), -1, np.int64)
        if k <= 0 or table.count_rows() == 0:
            return D, I
        params = self.ann_info(name).get("params", {})
        query = table.search(list(xq) if q > 1 else xq[0], vector_column_name=column).metric("dot").limit(k)
        query = query.select(["id", "_distance"])
        if cond:
            query = query.where(cond, prefilter=True)
        if exact:
            query = query.bypass_vector_index()
        else:
            if "nprobes" in params:
                query = query.nprobes(int(params["nprobes"]))
            if "refine_factor" in params:
                query = query.refine_factor(int(params["refine_factor"]))
            if "ef" in params:
                query = query.ef(int(params["ef"]))
        try:
            res = query.to_arrow()
        except ValueError as exc:
            raise _filter_error(exc, cond) from exc
        qi = res.column("query_index").to_numpy() if "query_index" in res.column_names else np.zeros(len(res), np.int64)
        ids = res.column("id").to_numpy()
        scores = 1.0 - res.column("_distance").to_numpy().astype(np.float32)
        for j in range(q):
            sel = qi == j
            Dj, Ij = merge_topk(scores[sel][None, :], ids[sel][None, :], k)
            D[j], I[j] = Dj[0], Ij[0]
        return D, I

    # -- maintenance -------------------------------------------------------------------------------------------
    def ann_info(self, name: str) -> dict:
        indices = [ix for ix in self._t(name).list_indices() if "vector" in getattr(ix, "columns", [""])[0]
                   or getattr(ix, "index_type", "").startswith(("IVF", "HNSW"))]
        if not indices:
            return {"kind": "flat", "params": {}}
        ix = indices[0]
        return {"kind": str(getattr(ix, "index_type", "ann")), "params": dict(getattr(self, "_params", {}).get(name, {}))}

    def set_search_params(self, name: str, params: dict) -> None:
        self.__dict__.setdefault("_params", {})[name] = dict(params)

    def optimize(self, name: str, ann: AnnConfig | None = None) -> dict:
        ann = ann or AnnConfig()
        table = self._t(name)
        done: dict = {}
        table.optimize(cleanup_older_than=timedelta(minutes=1))  # we hold the write lock; readers get a minute
        done["compacted"] = True
        n = table.count_rows()
        has_vec_index = self.ann_info(name)["kind"] != "flat"
        if ann.kind != "flat" and n >= ann.exact_below and not has_vec_index:
            params = {"index_type": "IVF_PQ", "num_partitions": max(1, int(math.sqrt(n))),
                      "num_sub_vectors": max(1, self.dim // 8), **{k: v for k, v in ann.params.items()
                                                                    if k not in ("nprobes", "refine_factor", "ef")}}
            table.create_index(metric="dot", vector_column_name="vector", **params)
            done["ann"] = params
            self.set_search_params(name, {"nprobes": max(20, params["num_partitions"] // 20), "refine_factor": 10,
                                          **{k: v for k, v in ann.params.items() if k in ("nprobes", "refine_factor", "ef")}})
        if n and "id" in table.schema.names and not any("id" == getattr(ix, "columns", [None])[0] for ix in table.list_indices()):
            try:
                table.create_scalar_index("id")
                done["id_index"] = True
            except Exception as exc:  # a scalar index is an optimisation only
                log.debug("no scalar index on id: %s", exc)
        return done

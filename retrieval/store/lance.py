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

from retrieval.errors import InvalidFilter, TableNotFound
from retrieval.store.base import AnnConfig, Store, check_queries, merge_topk

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
        params = self._search_params(name)
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
    _TYPES = {"IvfPq": "IVF_PQ", "IvfFlat": "IVF_FLAT", "IvfSq": "IVF_SQ", "IvfRq": "IVF_RQ",
              "IvfHnswSq": "IVF_HNSW_SQ", "IvfHnswPq": "IVF_HNSW_PQ", "IvfHnswFlat": "IVF_HNSW_FLAT"}
    KINDS = ("IVF_PQ", "IVF_FLAT", "IVF_SQ", "IVF_HNSW_SQ", "IVF_HNSW_PQ", "IVF_HNSW_FLAT")
    _SEARCH_KEYS = ("nprobes", "refine_factor", "ef")

    def _vector_index(self, name: str):
        for ix in self._t(name).list_indices():
            if list(getattr(ix, "columns", []))[:1] == ["vector"] and str(getattr(ix, "index_type", "")) in self._TYPES:
                return ix
        return None

    def ann_info(self, name: str) -> dict:
        """{"kind": "flat"} or the vector index's record: kind (IVF_PQ...), build and search params, indexed and
        unindexed (pending, searched exactly) rows, and what tuning measured."""
        ix = self._vector_index(name)
        if ix is None:
            return {**self.__dict__.get("_records", {}).get(name, {}), "kind": "flat", "params": {}} \
                if self.__dict__.get("_records", {}).get(name, {}).get("kind") == "flat" else {"kind": "flat", "params": {}}
        record = dict(self.__dict__.get("_records", {}).get(name, {}))
        info = {**record, "kind": self._TYPES[str(ix.index_type)],
                "params": dict(self.__dict__.get("_params", {}).get(name, {}))}
        try:
            stats = self._t(name).index_stats(ix.name)
            info["built_rows"] = int(stats.num_indexed_rows)
            info["pending_rows"] = int(stats.num_unindexed_rows)
        except Exception as exc:  # statistics are informative only
            log.debug("no index stats: %s", exc)
        return info

    def set_search_params(self, name: str, params: dict, record: dict | None = None, persist: bool = True) -> None:
        """Search with ``params`` (nprobes, refine_factor, ef). The Index passes the manifest's on open (that is
        how they persist); ``persist`` False sets them for the next searches only (tuning); ``record`` holds
        what tuning measured."""
        if not persist:
            self.__dict__.setdefault("_override", {})[name] = dict(params)
            return
        self.__dict__.setdefault("_override", {}).pop(name, None)
        self.__dict__.setdefault("_params", {})[name] = {k: v for k, v in params.items() if k in self._SEARCH_KEYS}
        if record is not None:
            keep = {k: v for k, v in record.items() if k not in ("params", "pending_rows")}
            self.__dict__.setdefault("_records", {}).setdefault(name, {}).update(keep)

    def _search_params(self, name: str) -> dict:
        override = self.__dict__.get("_override", {}).get(name)
        return override if override is not None else self.__dict__.get("_params", {}).get(name, {})

    def ann_grid(self, name: str) -> dict:
        """Search parameters tuning may try for the table's vector index (name -> increasing values)."""
        info = self.ann_info(name)
        kind = info["kind"]
        if kind == "flat":
            return {}
        parts = int(info.get("build", {}).get("num_partitions") or 256)
        nprobes = [v for v in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512) if v <= parts]
        if parts not in nprobes:
            nprobes.append(parts)
        if kind.startswith("IVF_HNSW"):
            return {"nprobes": nprobes, "ef": [32, 128, 512]}
        if kind in ("IVF_PQ", "IVF_SQ", "IVF_RQ"):
            return {"nprobes": nprobes, "refine_factor": [1, 5, 20, 50]}
        return {"nprobes": nprobes}

    def _wanted(self, name: str, ann: AnnConfig) -> dict:
        """{"kind": lance index type | "flat", "build": create_index params, "params": search params}."""
        from retrieval.ann.plan import choose_index

        n = self._t(name).count_rows()
        p = ann.params
        if ann.kind == "flat" or (ann.kind == "auto" and n < ann.exact_below):
            return {"kind": "flat", "build": {}, "params": {}}
        plan = choose_index(n, self.dim, p.get("memory"), p.get("recall", 0.95), ann.exact_below)
        kind = ann.kind.upper() if ann.kind != "auto" else {"ivf_flat": "IVF_FLAT", "ivf_sq8": "IVF_SQ",
                                                             "hnsw": "IVF_HNSW_SQ"}.get(plan.kind, "IVF_PQ")
        if kind not in self.KINDS:
            from retrieval.errors import InvalidInput

            raise InvalidInput(f"unknown LanceDB index type {ann.kind!r}; choose one of {', '.join(self.KINDS)}")
        parts = max(1, min(int(plan.build.get("nlist", round(math.sqrt(n)))), max(1, n // 40)))
        build = {"index_type": kind, "num_partitions": parts}
        if "PQ" in kind:
            sub = max(1, self.dim // 8)
            while self.dim % sub:
                sub -= 1
            build["num_sub_vectors"] = sub
        build.update(p.get("build", {}))
        build.update({k: v for k, v in p.items() if k in ("num_partitions", "num_sub_vectors", "m", "ef_construction")})
        search = {"nprobes": max(1, min(20, parts)), **({"refine_factor": 10} if kind in ("IVF_PQ", "IVF_SQ") else {}),
                  **({"ef": 64} if "HNSW" in kind else {})}
        search.update({k: v for k, v in p.items() if k in self._SEARCH_KEYS})
        return {"kind": kind, "build": build, "params": search}

    def optimize(self, name: str, ann: AnnConfig | None = None) -> dict:
        """Compact, fold rows added since the vector index was built into it (Lance's incremental index update),
        and build the index ``ann`` asks for when it differs from the one there is (then tune it)."""
        keep = ann is None and self._vector_index(name) is not None
        ann = ann or AnnConfig()
        table = self._t(name)
        done: dict = {}
        table.optimize(cleanup_older_than=timedelta(minutes=1))  # we hold the write lock; readers get a minute
        done["compacted"] = True
        current = self.ann_info(name)
        want = {"kind": current["kind"]} if keep else self._wanted(name, ann)
        records = self.__dict__.setdefault("_records", {})
        if want["kind"] == "flat" and current["kind"] != "flat":
            ix = self._vector_index(name)
            table.drop_index(ix.name)
            records[name] = {"kind": "flat"}
            done["dropped_index"] = ix.name
        elif not keep and want["kind"] != "flat" and (want["kind"] != current["kind"] or ann.params.get("rebuild")
                                         or want.get("build") != current.get("build")):
            accel = {"accelerator": "cuda"} if _cuda() else {}
            table.create_index(metric="dot", vector_column_name="vector", replace=True, **want["build"], **accel)
            records[name] = {"build": want["build"]}
            self.set_search_params(name, want["params"])
            done["ann"] = want
            done["rebuilt"] = True
            from retrieval.ann.tuning import tune_after_build

            tune_after_build(self, name, ann, done)
        if table.count_rows() and "id" in table.schema.names and not any(
                list(getattr(ix, "columns", []))[:1] == ["id"] for ix in table.list_indices()):
            try:
                table.create_scalar_index("id")
                done["id_index"] = True
            except Exception as exc:  # a scalar index is an optimisation only
                log.debug("no scalar index on id: %s", exc)
        return done


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False

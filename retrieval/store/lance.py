"""LanceDB backend (the default): one embedded Lance table per clipdex table, vectors and metadata together.

Every ``add`` and ``delete`` is one Lance commit (a new table version), so a crash loses at most the batch in
flight. Searches are exact (flat) until ``optimize`` builds a vector index; rows added after that are still found,
since Lance searches unindexed fragments exactly. Filtered searches pre-filter; if an ANN probe still comes back
short while at least k rows match, the query is re-run exactly. The vector index is Lance's own or, when it measures
faster, a FAISS index beside the table (``lance_ann.Sidecar``); which one a table gets is ``lance_plan``'s choice.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from retrieval.ann.config import AnnConfig
from retrieval.ann.exact import topk
from retrieval.errors import TableNotFound
from retrieval.store import lance_fragments, lance_plan
from retrieval.store.base import Store, check_queries
from retrieval.store.lance_ann import FAISS_KINDS, Sidecar, btree_config, index_config
from retrieval.store.lance_compact import compact
from retrieval.store.lance_disk import DiskSidecar, build_sidecar, iter_ids, open_sidecar, sample_by_offset
from retrieval.store.lance_errors import read_error
from retrieval.store.overrides import ThreadOverrides
from retrieval.store.where import filter_sql

log = logging.getLogger(__name__)


class LanceStore(Store):
    half_vectors = True  # float16 sources are stored as float16 (Index.ensure_table)

    def __init__(self, root: str | Path, dim: int):
        import lancedb  # heavy optional dependency, loaded when a Lance index is opened

        self.root = Path(root)
        self.dim = dim
        self.db = lancedb.connect(str(self.root))
        self._tables: dict = {}
        self._records: dict[str, dict] = {}   # table -> what tuning measured (the manifest keeps it)
        self._params: dict[str, dict] = {}    # table -> search params (nprobes, refine_factor, ef)
        self._override = ThreadOverrides()    # table -> search params for the calling thread only (tuning, dedup)
        self._sidecars: dict[str, Sidecar | None] = {}  # table -> its FAISS index (lance_ann), None for none
        self._pending_counts: dict = {}  # (table, version, build) -> rows added since the sidecar was built
        self._schemas: dict[str, pa.Schema] = {}
        self._last_ids: tuple = (None, None)  # (table, version, filter) -> the ids matching it

    # -- tables ------------------------------------------------------------------------------------------------
    def table_names(self) -> list[str]:
        names, token = [], None
        while True:
            page = self.db.list_tables(page_token=token)
            names.extend(page.tables)
            token = page.page_token
            if not token:
                return names

    def _t(self, name: str):
        if name not in self._tables:
            if name not in self.table_names():
                tables = ", ".join(self.table_names()) or "none"
                raise TableNotFound(f"this index has no table {name!r}; tables: {tables}")
            self._tables[name] = self.db.open_table(name)
        return self._tables[name]

    def create_table(self, name: str, schema: pa.Schema) -> None:
        if name not in self.table_names():
            self._tables[name] = self.db.create_table(name, schema=schema)

    def schema(self, name: str) -> pa.Schema:
        if name not in self._schemas:  # asked three times a search; the table object is pinned to its version
            self._schemas[name] = self._t(name).schema
        return self._schemas[name]

    def add_columns(self, name: str, fields: Sequence[pa.Field]) -> None:
        self._schemas.pop(name, None)
        self._t(name).add_columns(pa.schema(list(fields)))

    def add(self, name: str, rows: pa.Table) -> None:
        if len(rows):
            self._t(name).add(rows.select(self.schema(name).names))

    def commit_fragments(self, name: str, fragments: Sequence[str]) -> int:
        """Commit fragments written by other processes (``lance_fragments.write_rows``) in one Append; returns
        their row count. The table (and its schema: workers may have added columns) is read again afterwards."""
        lance_fragments.commit_fragments(self.root, name, fragments)
        self.reload(name)
        return lance_fragments.fragment_rows(fragments)

    def reload(self, name: str) -> None:
        """Forget the open table and its schema: another process committed to it."""
        self._tables.pop(name, None)
        self._schemas.pop(name, None)

    def delete(self, name: str, ids: Sequence[int]) -> int:
        ids = np.unique(np.asarray(ids, np.int64))
        if not len(ids):
            return 0
        table = self._t(name)
        side = self._sidecar(name)
        if side is not None:
            side.delete(ids)
        before = table.count_rows()
        for i in range(0, len(ids), 8192):
            table.delete(f"id IN ({','.join(str(int(v)) for v in ids[i:i + 8192])})")
        return before - table.count_rows()

    def version(self, name: str) -> int:
        return int(self._t(name).version)  # every add / delete / compaction is a new Lance version

    def count(self, name: str, where: str | None = None) -> int:
        return self._count(name, filter_sql(where, self.schema(name), "lance"))

    def _count(self, name: str, where: str | None) -> int:
        """Rows matching ``where``, SQL already checked and rendered by ``retrieval.store.where``."""
        table = self._t(name)
        if not where:
            return table.count_rows()
        try:
            return table.count_rows(where)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's filter is theirs to fix
            raise read_error(exc, where, self.root) from exc

    def scan(self, name: str, columns: Sequence[str] | None = None, where: str | None = None,
             batch_rows: int = 65536, rendered: bool = False) -> Iterator[pa.RecordBatch]:
        """Batches of the rows matching ``where`` (a user's filter; with ``rendered``, SQL already checked)."""
        where = where if rendered else filter_sql(where, self.schema(name), "lance")  # InvalidFilter unless plain
        query = self._t(name).search()
        if where:
            query = query.where(where)
        if columns is not None:
            query = query.select(list(columns))
        try:
            for batch in query.limit(None).to_batches(batch_rows):
                if len(batch):
                    yield batch
        except Exception as exc:  # noqa: BLE001 - the filter is evaluated while batches are read
            raise read_error(exc, where, self.root) from exc

    # -- search ------------------------------------------------------------------------------------------------
    def search(self, name: str, xq: np.ndarray, k: int, where: str | None = None, column: str = "vector",
               exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        xq = check_queries(xq, self.dim)
        where = filter_sql(where, self.schema(name), "lance")  # InvalidFilter unless a plain filter
        conds = [where] if where else []
        if self.schema(name).field(column).nullable and column != "vector":
            conds.append(f"`{column}` IS NOT NULL")
        cond = " AND ".join(conds) or None
        side = self._sidecar(name)
        if side is not None and column == "vector" and not exact and (not cond or side.filters):
            return self._sidecar_search(name, side, xq, k, cond)
        D, I = self._query(name, xq, k, cond, column, exact)
        short = (I < 0).any(axis=1)
        if short.any() and not exact and self.ann_info(name)["kind"] != "flat":
            available = self._count(name, cond)
            if (np.sum(I[short] >= 0, axis=1) < min(k, available)).any():  # ANN probe missed matching rows
                D2, I2 = self._query(name, xq[short], k, cond, column, exact=True)
                D[short], I[short] = D2, I2
        return D, I

    def sample_vectors(self, name: str, rows: int, seed: int = 1, column: str = "vector"
                       ) -> tuple[np.ndarray, np.ndarray]:
        """``Store.sample_vectors`` by random access (``lance_disk.sample_by_offset``); a nullable column (a
        caption's vector) by a pass, so that its nulls do not thin the sample."""
        n = self.count(name)
        if column != "vector" or rows >= n:
            return super().sample_vectors(name, rows, seed, column)
        return sample_by_offset(self._t(name), n, rows, self.dim, seed)

    def iter_vectors_clustered(self, name: str, batch_rows: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """An ``ivf_pq_disk`` table: its vector file front to back (inverted list by list), then the rows added since
        it was built; another table in its own order (``Store.iter_vectors_clustered``)."""
        side = self._sidecar(name)
        if not isinstance(side, DiskSidecar):
            yield from self.iter_vectors(name, batch_rows=batch_rows)
            return
        yield from side.iter_rows(batch_rows)
        yield from self.iter_vectors(name, batch_rows=batch_rows, where=f"id > {side.built_max_id}")

    def _sidecar(self, name: str) -> Sidecar | None:
        if name not in self._sidecars:
            self._sidecars[name] = open_sidecar(self.root / "_ann", name)
        return self._sidecars[name]

    def _sidecar_search(self, name: str, side: Sidecar, xq: np.ndarray, k: int, cond: str | None = None):
        """The FAISS index's top-k merged with an exact Lance search of the rows added since it was built; with
        ``cond`` (a sidecar that ``filters``) among the rows matching it, given to the index as their ids."""
        D, I = side.search(xq, k, self._search_params(name), *([self._ids_where(name, cond)] if cond else []))
        if self._pending(name, side):
            new = f"id > {side.built_max_id}"
            Dp, Ip = self._query(name, xq, k, f"({cond}) AND {new}" if cond else new, "vector", exact=True)
            D, I = np.concatenate([D, Dp], 1), np.concatenate([I, Ip], 1)
        return topk(D, I, k)

    def _ids_where(self, name: str, sql: str) -> np.ndarray:
        """Ids of the rows matching ``sql`` (rendered by ``retrieval.store.where``), (m,) int64, kept for the last
        filter of each table version."""
        key = (name, self.version(name), sql)
        if self._last_ids[0] != key:
            self._last_ids = (key, iter_ids(self.scan(name, ["id"], where=sql, batch_rows=262144, rendered=True)))
        return self._last_ids[1]

    def _pending(self, name: str, side: Sidecar) -> int:
        """Rows added since the sidecar was built (counted once per table version)."""
        key = (name, self.version(name), side.built_max_id)
        if key not in self._pending_counts:
            self._pending_counts = {key: self._count(name, f"id > {side.built_max_id}")}
        return self._pending_counts[key]

    def max_id(self, name: str) -> int:
        side = self._sidecar(name)
        indexed = side.built_max_id if side is not None else -1
        return max(super().max_id(name), indexed)  # never reuse an id the sidecar indexed, even a deleted one

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
        except Exception as exc:  # noqa: BLE001 - a failing filter is the user's to fix; other errors propagate
            raise read_error(exc, cond, self.root) from exc
        if "query_index" in res.column_names:
            qi = res.column("query_index").to_numpy()
        else:  # one query: Lance adds no query_index column
            qi = np.zeros(len(res), np.int64)
        ids = res.column("id").to_numpy()
        scores = 1.0 - res.column("_distance").to_numpy().astype(np.float32)
        for j in range(q):
            sel = qi == j
            Dj, Ij = topk(scores[sel][None, :], ids[sel][None, :], k)
            D[j], I[j] = Dj[0], Ij[0]
        return D, I

    # -- maintenance -------------------------------------------------------------------------------------------
    def _vector_index(self, name: str):
        for ix in self._t(name).list_indices():
            on_vector = list(getattr(ix, "columns", []))[:1] == ["vector"]
            if on_vector and str(getattr(ix, "index_type", "")) in lance_plan.INDEX_TYPES:
                return ix
        return None

    def ann_info(self, name: str) -> dict:
        """{"kind": "flat"} or the vector index's record: kind (IVF_PQ...), build and search params, indexed and
        unindexed (pending, searched exactly) rows, and what tuning measured."""
        ix = self._vector_index(name)
        record = dict(self._records.get(name, {}))
        side = self._sidecar(name)
        params = dict(self._params.get(name, {}))
        if side is not None:
            return {**record, **side.record, "engine": "faiss", "params": params,
                    "pending_rows": self._pending(name, side), "deleted_rows": int(len(side.tomb))}
        if ix is None:
            kept = {k: v for k, v in record.items() if k in ("note", "candidates")}
            return {**kept, "kind": "flat", "params": {}}
        info = {**record, "kind": lance_plan.INDEX_TYPES[str(ix.index_type)], "params": params}
        try:
            stats = self._t(name).index_stats(ix.name)
            info["built_rows"] = int(stats.num_indexed_rows)
            info["pending_rows"] = int(stats.num_unindexed_rows)
        except Exception as exc:  # noqa: BLE001 - statistics are informative only
            log.debug("no index stats: %s", exc)
        return info

    def set_search_params(self, name: str, params: dict | None, record: dict | None = None,
                          persist: bool = True) -> None:
        """Search with ``params`` (nprobes, refine_factor, ef). The Index passes the manifest's on open (that is
        how they persist); ``persist`` False sets them for the calling thread's next searches only (tuning, a dedup
        run; None drops them); ``record`` holds
        what tuning measured."""
        if not persist:
            self._override.set(name, params)
            return
        self._override.set(name, None)
        self._params[name] = {k: v for k, v in params.items() if k in lance_plan.SEARCH_KEYS}
        if record is not None:
            keep = {k: v for k, v in record.items() if k not in ("params", "pending_rows")}
            self._records.setdefault(name, {}).update(keep)

    def _search_params(self, name: str) -> dict:
        override = self._override.get(name)
        return override if override is not None else self._params.get(name, {})

    def ann_grid(self, name: str) -> dict:
        """Search parameters tuning may try for the table's vector index (name -> increasing values)."""
        return lance_plan.tuning_grid(self.ann_info(name))

    def check_kind(self, kind: str) -> str:
        """The Lance index type ``kind`` names ("auto" and "flat" pass); ``InvalidInput`` for any other."""
        return lance_plan.check_kind(kind)

    def _wanted(self, name: str, ann: AnnConfig) -> dict:
        """What ``ann`` asks for on this table (``lance_plan.wanted_index``); a bad kind is refused first."""
        lance_plan.check_kind(ann.kind)
        return lance_plan.wanted_index(ann, self._t(name).count_rows(), self.dim)

    def optimize(self, name: str, ann: AnnConfig | None = None) -> dict:
        """Compact, fold rows added or deleted since the vector index was built into it (Lance's incremental
        update, or the FAISS sidecar's), and build the index ``ann`` asks for when it differs from the one there
        is (``done["rebuilt"]``: the index layer tunes it). The kind is checked before anything changes."""
        side = self._sidecar(name)
        keep = ann is None and (self._vector_index(name) is not None or side is not None)
        if keep and side is not None and side.stale():  # too many deleted rows to keep skipping: rebuild the same
            same = {"factory": side.record["factory"], "build": side.record.get("build", {}), "rebuild": True,
                    **self._params.get(name, {})}
            ann = AnnConfig(side.kind, 0, same)
            keep = False
        ann = ann or AnnConfig()
        table = self._t(name)
        current = self.ann_info(name)
        want = {"kind": current["kind"]} if keep else self._wanted(name, ann)  # refuses a bad kind: nothing done yet
        done: dict = {}
        compact(table, timedelta(minutes=1))  # we hold the write lock; readers get a minute
        done["compacted"] = True
        if keep and side is not None and (self._pending(name, side) or len(side.tomb)):
            added = self.iter_vectors(name, where=f"id > {side.built_max_id}")
            done["folded"] = side.fold(added, self.max_id(name))
        changed = (want["kind"] != current["kind"] or ann.params.rebuild
                   or any(want.get(key) != current.get(key) for key in ("build", "factory")))
        if side is not None and not keep and (want["kind"] not in FAISS_KINDS or changed):
            side.drop()
            self._sidecars[name] = None
            self._records[name] = {}
            done["dropped_index"] = "faiss"
        ix = self._vector_index(name)
        if ix is not None and not keep and (want["kind"] == "flat" or want["kind"] in FAISS_KINDS):
            table.drop_index(ix.name)
            self._records[name] = {}
            done["dropped_index"] = ix.name
        if not keep and want["kind"] != "flat" and changed:  # Lance's index -> a FAISS one: dropped, then built
            if want["kind"] in FAISS_KINDS:
                self._sidecars[name] = build_sidecar(self, name, want, self.root / "_ann")
                self._pending_counts.clear()
            else:
                table.create_index("vector", config=index_config(want["build"]), replace=True)
            self._records[name] = {"build": want["build"]}
            self.set_search_params(name, want["params"])
            done["ann"] = want
            done["rebuilt"] = True
        if table.count_rows() and "id" in table.schema.names and not lance_plan.has_id_index(table):
            try:
                table.create_index("id", config=btree_config(), replace=True)
                done["id_index"] = True
            except Exception as exc:  # noqa: BLE001 - a scalar index is an optimisation only
                log.debug("no scalar index on id: %s", exc)
        return done

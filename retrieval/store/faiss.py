"""FAISS backend: Parquet parts hold the rows (vectors included), a FAISS index per vector column answers searches.

Layout under ``faiss/``::

    <table>.parquet/part-000001-ab12cd.parquet ...   the rows; pyarrow, polars or duckdb read the folder as a dataset
    <table>.state.json                                which parts are live, the schema, the ANN record, counters
    <table>.faiss                                     IndexIDMap2 over the ``vector`` column: FAISS ids are row ids
    <table>.<column>.faiss                            the same for other vector columns (``text_vector``), non-null rows

The Parquet parts are the truth (``faiss_parts.py``): each ``add`` writes a new part and commits the state file by
an atomic rename, so a crash loses at most the batch in flight; ids are never reused. The FAISS files are derived
(``faiss_table.py``): tied to the state generation they were built from, repaired or rebuilt in memory when behind,
and written by writers only, on ``flush`` (and every ``flush_every`` seconds while adding). Searches
(``faiss_search.py``) and filters (``faiss_filter.py``, DuckDB) read a snapshot: a reader whose parts a writer has
removed re-reads the state. ``faiss.read_index`` opens the files directly; ``index.search`` returns row ids.

ANN indexes (HNSW, IVF-flat, IVF-SQ8, IVF fast-scan PQ with refinement; ``retrieval/ann/structures.py``) index the
``vector`` column only; rows added or deleted after the build are a delta index and tombstones until ``optimize``.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from retrieval.ann import structures as faiss_ann
from retrieval.ann.config import AnnConfig, AnnParams
from retrieval.ann.plan import KINDS, IndexPlan, choose_index
from retrieval.ann.selection import search_grid
from retrieval.errors import IndexFormatError, InvalidInput, TableNotFound
from retrieval.store.base import Store, arrow_to_vectors, check_queries
from retrieval.store.faiss_filter import DuckFilter
from retrieval.store.faiss_parts import PartGone, atomic_write, new_state, vector_columns
from retrieval.store.faiss_search import search_table
from retrieval.store.faiss_table import FaissTable
from retrieval.store.where import parse_filter

log = logging.getLogger(__name__)
RETRIES = 3  # times a reader re-reads the state when a writer removed the parts it was reading
_FAISS_SEARCH_KEYS = ("nprobe", "efSearch", "k_factor")


def _missing(name: str, exc: PartGone) -> IndexFormatError:
    return IndexFormatError(f"table {name!r}: Parquet part {exc} is missing; restore it from a "
                            f"backup or re-index")


class FaissStore(Store):
    def __init__(self, root: str | Path, dim: int, flush_every: float = 30.0, writer: bool = False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.flush_every = flush_every
        self._tables: dict[str, FaissTable] = {}
        self._last_flush = time.monotonic()
        self._filter = DuckFilter()
        self._writer = writer  # the index holds the lock: derived files found stale are repaired on close
        self._wrote = False  # only a store that wrote (a writer: the index holds the lock) ever writes files

    # -- tables ------------------------------------------------------------------------------------------------
    def table_names(self) -> list[str]:
        return sorted(p.name[: -len(".state.json")] for p in self.root.glob("*.state.json"))

    def _t(self, name: str) -> FaissTable:
        if name not in self._tables:
            if not (self.root / f"{name}.state.json").is_file():
                tables = ", ".join(self.table_names()) or "none"
                raise TableNotFound(f"this index has no table {name!r}; tables: {tables}")
            self._tables[name] = FaissTable(self.root, name, self.dim)
        return self._tables[name]

    def _read(self, name: str, fn: Callable[[FaissTable], object]):
        """``fn(table)``; a reader whose parts a writer removed meanwhile re-reads the state and tries again."""
        for attempt in range(RETRIES):
            try:
                return fn(self._t(name))
            except PartGone as exc:
                if self._wrote or attempt == RETRIES - 1:
                    raise _missing(name, exc) from None
                log.info("re-reading the state of %s: %s was removed by a writer", name, exc)
                self._tables.pop(name, None)

    def create_table(self, name: str, schema: pa.Schema) -> None:
        if (self.root / f"{name}.state.json").is_file():
            return
        self._wrote = True
        (self.root / f"{name}.parquet").mkdir(exist_ok=True)
        atomic_write(self.root / f"{name}.state.json", json.dumps(new_state(schema)).encode())

    def schema(self, name: str) -> pa.Schema:
        return self._t(name).state.schema

    def add_columns(self, name: str, fields: Sequence[pa.Field]) -> None:
        self._wrote = True
        state = self._t(name).state
        for f in fields:
            state.schema = state.schema.append(pa.field(f.name, f.type, nullable=True))
        state.save()  # old parts lack the column: reads fill it with nulls

    # -- writes ------------------------------------------------------------------------------------------------
    def add(self, name: str, rows: pa.Table) -> None:
        if not len(rows):
            return
        self._wrote = True
        t = self._t(name)
        rows = rows.select(t.state.schema.names).cast(t.state.schema)
        indexes = {c: t.index(c) for c in vector_columns(t.state.schema)}  # loaded before the part exists
        ids = rows.column("id").to_numpy().astype(np.int64)
        part = t.state.write_part(rows)
        t.state.commit(t.state.parts + [part], ids)  # the commit point
        for column, index in indexes.items():
            x, valid = arrow_to_vectors(rows.column(column), self.dim)
            if not len(x):
                continue
            if t.uses_ann(column):  # searched exactly until optimize folds it in
                t.delta_index().add_with_ids(np.ascontiguousarray(x), ids[valid])
                continue
            index.add_with_ids(np.ascontiguousarray(x), ids[valid])
            t.changed(column)
        t.count = None
        if time.monotonic() - self._last_flush > self.flush_every:
            self.flush()

    def delete(self, name: str, ids: Sequence[int]) -> int:
        import faiss  # heavy optional dependency (the FAISS backend)

        ids = np.unique(np.asarray(ids, np.int64))
        if not len(ids):
            return 0
        self._wrote = True
        t = self._t(name)
        indexes = {c: t.index(c) for c in vector_columns(t.state.schema)}
        deleted, parts = 0, []
        for part in t.state.parts:
            table = t.state.read_part(part)
            keep = ~np.isin(table.column("id").to_numpy(), ids)
            if keep.all():
                parts.append(part)
                continue
            deleted += int((~keep).sum())
            if keep.any():
                parts.append(t.state.write_part(table.filter(pa.array(keep))))
        if not deleted:
            return 0
        t.state.commit(parts)
        for column, index in indexes.items():
            if t.uses_ann(column):  # tombstones until optimize; the delta index drops them at once
                have = faiss.vector_to_array(index.id_map)
                t.tomb = np.union1d(t.tomb, ids[np.isin(ids, have)])
                if t.delta is not None:
                    t.delta.remove_ids(faiss.IDSelectorBatch(ids))
                continue
            index.remove_ids(faiss.IDSelectorBatch(ids))
            t.changed(column)
        t.count = None
        return deleted

    # -- reads -------------------------------------------------------------------------------------------------
    def _matching_ids(self, t: FaissTable, where: str) -> np.ndarray:
        filt = parse_filter(where, t.state.schema)  # InvalidFilter unless a plain filter over t's columns
        return self._filter.matching_ids(t.state, filt)

    def version(self, name: str) -> int:
        return self._read(name, lambda t: t.state.generation)  # bumped by every commit that changes the rows

    def count(self, name: str, where: str | None = None) -> int:
        def run(t: FaissTable) -> int:
            if where:
                return len(self._matching_ids(t, where))
            if t.count is None:
                t.count = t.state.num_rows()
            return t.count

        return self._read(name, run)

    def max_id(self, name: str) -> int:
        """The largest id the table ever held: ids of deleted rows are not handed out again."""
        return self._read(name, lambda t: t.state.max_id())

    def scan(self, name: str, columns: Sequence[str] | None = None, where: str | None = None,
             batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        for attempt in range(RETRIES):
            started = False
            try:
                for rb in self._scan(self._t(name), columns, where, batch_rows):
                    started = True
                    yield rb
                return
            except PartGone as exc:
                if started or self._wrote or attempt == RETRIES - 1:
                    raise _missing(name, exc) from None
                self._tables.pop(name, None)

    def _scan(self, t: FaissTable, columns, where, batch_rows) -> Iterator[pa.RecordBatch]:
        cols = list(columns) if columns is not None else t.state.schema.names
        ids = self._matching_ids(t, where) if where else None
        if ids is not None and not len(ids):
            return
        for part in t.state.parts:
            table = t.state.read_part(part, list(dict.fromkeys(["id", *cols])))
            if ids is not None:
                table = table.filter(pa.array(np.isin(table.column("id").to_numpy(), ids)))
            for rb in table.select(cols).to_batches(batch_rows):
                if len(rb):
                    yield rb

    def search(self, name: str, xq: np.ndarray, k: int, where: str | None = None, column: str = "vector",
               exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        xq = check_queries(xq, self.dim)

        def run(t: FaissTable):
            allowed = self._matching_ids(t, where) if where else None
            return search_table(t, xq, k, column, exact, allowed)

        return self._read(name, run)

    # -- the ANN record ----------------------------------------------------------------------------------------
    def ann_info(self, name: str) -> dict:
        """The table's ANN record: kind, factory, build and search params, built_rows, tuning results; with
        ``pending_rows`` / ``deleted_rows`` when the index is loaded."""
        t = self._t(name)
        info = {**t.ann, "kind": t.ann.get("kind", "flat"), "params": dict(t.ann.get("params", {}))}
        if t.is_ann and "vector" in t.indexes:
            info["pending_rows"] = int(t.delta.ntotal) if t.delta is not None else 0
            info["deleted_rows"] = int(len(t.tomb))
        return info

    def set_search_params(self, name: str, params: dict | None, record: dict | None = None,
                          persist: bool = True) -> None:
        """Search with ``params`` (nprobe, efSearch, k_factor); ``persist`` False: the calling thread only (tuning, a
        dedup run; None drops them).
        ``record``: extra keys (measured recall...) stored with the ANN record."""
        t = self._t(name)
        if not persist:
            t.override = params
            return
        self._wrote = True
        t.override = None
        extra = {k: v for k, v in (record or {}).items() if k not in ("kind", "factory", "build", "params")}
        base = t.ann if t.is_ann else {k: v for k, v in t.ann.items() if k in ("kind", "factory", "build")}
        t.state.ann = {**base, **extra, "params": dict(params)}  # a flat table keeps no earlier measurements
        t.state.save()

    def ann_grid(self, name: str) -> dict:
        """Search parameters tuning may try for the table's index (name -> increasing values): the grid the
        structure was measured with when it was chosen (``retrieval.ann.selection.search_grid``)."""
        t = self._t(name)
        kind = t.ann.get("kind", "flat")
        if kind != "hnsw" and not kind.startswith("ivf"):
            return {}
        return search_grid(IndexPlan(kind, faiss_ann.factory_of(t.ann, self.dim), t.ann.get("build", {})))

    # -- maintenance -------------------------------------------------------------------------------------------
    @staticmethod
    def check_kind(kind: str) -> None:
        """``InvalidInput`` unless ``kind`` is auto or one of the FAISS kinds."""
        if kind != "auto" and kind not in KINDS:
            raise InvalidInput(f"unknown FAISS index kind {kind!r}; choose one of auto, {', '.join(KINDS)}")

    def _wanted(self, name: str, ann: AnnConfig) -> dict:
        """The ANN record ``ann`` asks for: {"kind", "factory", "build", "params"}."""
        self.check_kind(ann.kind)
        n = self.count(name)
        p = ann.params
        if ann.kind == "flat" or (ann.kind == "auto" and n < ann.exact_below):
            return {"kind": "flat", "factory": "Flat", "build": {}, "params": {}}
        plan = choose_index(n, self.dim, p.memory, p.recall, ann.exact_below, None if ann.kind == "auto" else ann.kind)
        build = {**plan.build, **p.build}
        factory = p.factory or (f"HNSW{int(build['M'])},Flat" if plan.kind == "hnsw" else plan.factory)
        search = {**plan.search, **{k: v for k, v in p.search.as_dict().items() if k in _FAISS_SEARCH_KEYS}}
        return {"kind": plan.kind, "factory": factory, "build": build, "params": search}

    def optimize(self, name: str, ann: AnnConfig | None = None, target_rows: int = 262_144) -> dict:
        """Compact small parts; build the ANN index ``ann`` asks for, or fold pending rows and deletions into the
        one there is (``ann.params.rebuild`` forces a rebuild); bring the derived files up to date. The kind is
        checked before anything changes."""
        t = self._t(name)
        keep = ann is None and t.is_ann  # a plain optimize keeps the (tuned) index it finds
        ann = ann or AnnConfig()
        current = faiss_ann.factory_of(t.ann, self.dim)
        want = {"kind": t.ann["kind"], "factory": current} if keep else self._wanted(name, ann)
        self._wrote = True
        done: dict = {}
        compacted = t.state.compact(target_rows)
        if compacted:
            done["compacted_parts"] = compacted
        if want["kind"] != t.ann.get("kind", "flat") or want["factory"] != current or ann.params.rebuild:
            t.state.ann = {"kind": want["kind"], "factory": want["factory"], "build": want["build"],
                           "params": want["params"], "built_rows": 0}
            t.drop_indexes()
            t.state.save()
            for column in vector_columns(t.state.schema):
                t.index(column)  # rebuilds from the Parquet rows
            done["ann"] = {k: t.ann[k] for k in ("kind", "factory", "build", "params")}
            done["rebuilt"] = True
        elif t.is_ann:
            folded = self._fold(t)
            if folded is None:  # deletions piled up in an index that cannot remove: the same index, built afresh
                same = AnnParams.from_dict({"factory": current, "build": t.ann.get("build", {}), "rebuild": True,
                                            **t.ann.get("params", {})})
                return {**done, **self.optimize(name, AnnConfig(t.ann["kind"], 0, same), target_rows)}
            done.update(folded)
        for column in vector_columns(t.state.schema):
            t.index(column)  # a writer repairs what is behind; flush writes it
        t.state.collect()
        t.state.remove_leftovers()
        self.flush()
        return done

    def _fold(self, t: FaissTable) -> dict | None:
        """Add the pending rows to the ANN index and remove the tombstones: {"folded_rows", "removed_rows"}; None
        when the index cannot remove ids and they are over a tenth of it (rebuild instead)."""
        import faiss  # heavy optional dependency (the FAISS backend)

        index = t.index("vector")
        folded = int(t.delta.ntotal) if t.delta is not None else 0
        if folded:  # IVF lists / HNSW graph take new rows without retraining
            ids = faiss.vector_to_array(t.delta.id_map).astype(np.int64)
            index.add_with_ids(np.ascontiguousarray(t.delta.index.reconstruct_n(0, folded)), ids)
            t.delta = None
        removed = len(t.tomb)
        if removed:
            try:
                index.remove_ids(faiss.IDSelectorBatch(t.tomb))
                t.tomb = np.zeros(0, np.int64)
            except RuntimeError:  # HNSW and fast-scan lists cannot remove
                if removed > 0.1 * max(index.ntotal, 1):
                    return None
                removed = 0
        if folded or removed:
            t.changed("vector")
            t.ann["built_rows"] = int(index.ntotal - len(t.tomb))
            t.state.save()
        return {"folded_rows": folded, "removed_rows": removed}

    def flush(self) -> None:
        """Write the derived files that are behind (a store that never wrote is a reader: it writes nothing)."""
        if self._wrote or self._writer:
            for t in self._tables.values():
                if self._writer:
                    t.repair_files()
                t.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        self._filter.close()

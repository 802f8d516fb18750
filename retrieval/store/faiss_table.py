"""The FAISS backend's derived files: one ``.faiss`` per vector column, checked against the Parquet truth.

``<table>.faiss`` (the ``vector`` column) and ``<table>.<column>.faiss`` are IndexIDMap2 indexes whose FAISS ids
are the row ids. The state file records each one (``derived[column]``: the generation it was built from, its size
and mtime). On load:

- the file is the one recorded and of the current generation: used as is;
- the one recorded (in this reader's state, or in the newest one when a writer rewrote it since), of another
  generation: compared with the Parquet ids (ids are never reused, so an id in
  both holds the same vector). A flat index is repaired in memory; an ANN index gets the missing rows in an
  exact in-memory *delta* index and the deleted ones as *tombstones* (over-fetched and dropped) until
  ``optimize`` folds them in;
- missing, unreadable, or not the file recorded: rebuilt in memory from the Parquet rows. (A state written before
  files were recorded trusts the file it finds and compares its ids, as clipdex did then.)

Only a writer persists a repaired or rebuilt index (``flush(persist=True)``); a reader never writes. GPU copies
for searching are made on demand (``searchable``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from retrieval.ann import structures as faiss_ann
from retrieval.errors import IndexFormatError, TableNotFound
from retrieval.store.faiss_parts import TableState, vector_columns
from retrieval.store.overrides import ThreadOverrides

log = logging.getLogger(__name__)


def index_path(root: Path, name: str, column: str) -> Path:
    return root / (f"{name}.faiss" if column == "vector" else f"{name}.{column}.faiss")


def _signature(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


class FaissTable:
    """One table in memory: its state (Parquet side) and its derived FAISS indexes."""

    def __init__(self, root: Path, name: str, dim: int):
        self.root = root
        self.name = name
        self.dim = dim
        self.state = TableState(root, name)
        self.indexes: dict = {}                   # column -> faiss index
        self.dirty: set[str] = set()              # columns whose index differs from its file
        self.current: set[str] = set()            # columns whose file matches the rows of this generation
        self.count: int | None = None
        self.delta = None                         # flat IDMap2 of rows added after the ANN build (vector column)
        self.tomb = np.zeros(0, np.int64)         # ids in the ANN index deleted since (sorted)
        self._override = ThreadOverrides()        # search params set for the calling thread only (tuning, dedup)
        self.gpu: dict = {}                       # column -> GPU copy used for searching

    @property
    def override(self) -> dict | None:
        """The calling thread's search params for this table (``set_search_params(persist=False)``), or None."""
        return self._override.get("vector")

    @override.setter
    def override(self, params: dict | None) -> None:
        self._override.set("vector", params)

    @property
    def ann(self) -> dict:
        return self.state.ann

    @property
    def is_ann(self) -> bool:
        return self.state.ann.get("kind", "flat") != "flat"

    def uses_ann(self, column: str) -> bool:
        return self.is_ann and column == "vector"

    def changed(self, column: str) -> None:
        """The in-memory index of ``column`` now differs from its file."""
        self.dirty.add(column)
        self.current.discard(column)
        self.gpu.pop(column, None)

    # -- loading and repair ------------------------------------------------------------------------------------
    def index(self, column: str):
        """The FAISS index of a vector column, checked against the Parquet ids (see the module docstring)."""
        import faiss  # heavy optional dependency (the FAISS backend)

        if column in self.indexes:
            return self.indexes[column]
        if column not in vector_columns(self.state.schema):
            raise TableNotFound(f"table {self.name!r} has no vector column {column!r}")
        path = index_path(self.root, self.name, column)
        record = self._record_of(column, path)
        index = None
        if record is not None or (self.state.legacy and path.is_file()):  # legacy: before files were recorded
            index = self._read(path)
        elif path.is_file():
            log.warning("%s is not the file built from this table's rows: rebuilding it", path.name)
        if index is not None and record and record.get("generation") == self.state.generation \
                and not self.uses_ann(column):  # an ANN index is always compared: its tombstones are not stored
            self.indexes[column] = index
            self.current.add(column)
            return index
        fresh = index is None
        if fresh:
            index = self._build_ann() if self.uses_ann(column) else faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self._reconcile(column, index, fresh)
        self.indexes[column] = index
        return index

    def _record_of(self, column: str, path: Path) -> dict | None:
        """The record of the file at ``path``: from this snapshot's state, or from the newest state when a writer
        has rewritten the file since (ids are never reused, so comparing ids brings it back to this snapshot);
        None when neither records it."""
        if not path.is_file():
            return None
        sig = _signature(path)
        record = self.state.derived.get(column)
        if record and {k: record.get(k) for k in sig} == sig:
            return record
        try:
            latest = TableState(self.root, self.name)
        except IndexFormatError:
            return None
        record = latest.derived.get(column)
        same_structure = faiss_ann.factory_of(latest.ann, self.dim) == faiss_ann.factory_of(self.ann, self.dim)
        if record and {k: record.get(k) for k in sig} == sig and (same_structure or column != "vector"):
            return record
        return None

    def _read(self, path: Path):
        """The index in ``path``, or None when unreadable or of another dimension."""
        import faiss  # heavy optional dependency (the FAISS backend)

        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            log.warning("rebuilding unreadable %s: %s", path.name, exc)
            return None
        return index if index.d == self.dim else None

    def _reconcile(self, column: str, index, fresh: bool) -> None:
        """Bring ``index`` in line with the Parquet ids: a flat one in place, an ANN one by delta and tombstones."""
        import faiss  # heavy optional dependency (the FAISS backend)

        have = faiss.vector_to_array(index.id_map).astype(np.int64) if index.ntotal else np.zeros(0, np.int64)
        truth = list(self.state.iter_ids(column))
        truth = np.concatenate(truth) if truth else np.zeros(0, np.int64)
        extra = np.setdiff1d(have, truth)
        missing = np.setdiff1d(truth, have)
        if self.uses_ann(column):
            self.tomb = extra
            if len(missing):
                delta = self.delta_index()
                for ids, x in self.state.ids_and_vectors(column, self.dim, only=missing):
                    delta.add_with_ids(np.ascontiguousarray(x), ids)
            if len(extra) or len(missing):
                log.info("%s: %d rows pending, %d deleted since the ANN build", self.name, len(missing), len(extra))
        else:
            if len(extra):
                sel = faiss.IDSelectorBatch(extra)
                index.remove_ids(sel)
            if len(missing):
                for ids, x in self.state.ids_and_vectors(column, self.dim, only=missing):
                    index.add_with_ids(np.ascontiguousarray(x), ids)
            if len(extra) or len(missing):
                log.info("repaired the %s index of %s in memory: +%d -%d rows", column, self.name, len(missing),
                         len(extra))
        if fresh or len(extra) or len(missing):
            if not self.uses_ann(column) or fresh:
                self.changed(column)
        else:
            self.current.add(column)  # the file holds exactly these rows: only its record is behind

    def _build_ann(self):
        """Train and fill the ANN index of the vector column from the Parquet rows (the record in ``ann``)."""
        factory = faiss_ann.factory_of(self.ann, self.dim)
        build = self.ann.get("build", {})
        log.info("building %s over the rows of %s", factory, self.name)
        sample = self.state.sample("vector", self.dim, int(build.get("train_rows", 50_000)))
        index = faiss_ann.build_index(factory, self.dim, sample, self.state.ids_and_vectors("vector", self.dim),
                                      build)
        self.ann["built_rows"] = int(index.ntotal)
        self.delta, self.tomb = None, np.zeros(0, np.int64)
        return index

    def delta_index(self):
        import faiss  # heavy optional dependency (the FAISS backend)

        if self.delta is None:
            self.delta = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        return self.delta

    def drop_indexes(self) -> None:
        """Forget every derived index (files included): the next ``index`` call rebuilds from the rows."""
        for column in vector_columns(self.state.schema):
            self.indexes.pop(column, None)
            self.gpu.pop(column, None)
            self.state.derived.pop(column, None)
            index_path(self.root, self.name, column).unlink(missing_ok=True)
        self.dirty.clear()
        self.current.clear()
        self.delta, self.tomb = None, np.zeros(0, np.int64)

    def searchable(self, column: str, index):
        """The index to search: a GPU copy when GPUs exist and the structure supports it."""
        kind = self.ann.get("kind", "flat") if self.uses_ann(column) else "flat"
        if faiss_ann.num_gpus() == 0:
            return index
        if column not in self.gpu:
            self.gpu[column] = faiss_ann.to_gpu_for_search(index, kind)
        return self.gpu[column]

    def repair_files(self) -> None:
        """Load (and so repair) each vector column whose file is missing or not the one recorded for these rows.
        A cheap check first: a file whose signature and generation match its record is not read."""
        for column in vector_columns(self.state.schema):
            if column in self.indexes:
                continue
            record = self._record_of(column, index_path(self.root, self.name, column))
            if record is None or (record.get("generation") != self.state.generation and not self.uses_ann(column)):
                self.index(column)

    # -- persisting (writers only) -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the indexes that differ from their files and record each file with the state's generation."""
        import faiss  # heavy optional dependency (the FAISS backend)

        recorded = False
        for column in sorted(self.dirty):
            path = index_path(self.root, self.name, column)
            tmp = path.with_name(f".{path.name}.tmp")
            faiss.write_index(self.indexes[column], str(tmp))
            os.replace(tmp, path)
            self.state.derived[column] = {"generation": self.state.generation, **_signature(path)}
            self.current.add(column)
            recorded = True
        self.dirty.clear()
        for column in sorted(self.current):  # files that hold exactly the current rows: only records are behind
            record = self.state.derived.get(column)
            path = index_path(self.root, self.name, column)
            if record is None and path.is_file():  # a file from before files were recorded
                self.state.derived[column] = {"generation": self.state.generation, **_signature(path)}
                recorded = True
            elif record is not None and record.get("generation") != self.state.generation \
                    and not self.uses_ann(column):
                record["generation"] = self.state.generation
                recorded = True
        if recorded:
            self.state.save()

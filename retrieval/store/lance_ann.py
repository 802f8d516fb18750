"""The vector indexes of a Lance table: Lance's own (``index_config``) and a FAISS index beside the table,
:class:`Sidecar`.

The FAISS index beside a Lance table is what ``optimize`` builds on the default backend when a FAISS structure
measures faster at the recall target than Lance's own indexes (``retrieval.ann.selection``).

Files, under ``<index>/lance/_ann/`` (Lance ignores them)::

    <table>.faiss       IndexIDMap2 over the structure (ids are the table's ``id``)
    <table>.json        {"kind", "factory", "build", "built_max_id", "built_rows"}: written after the index file, so
                        a crash between the two leaves the old record or none (the table is then searched exactly)
    <table>.tomb.npy    ids deleted since the build (dropped from results until the next ``optimize``)

Rows added after the build (``id > built_max_id``) are searched exactly by Lance and merged; ``optimize`` folds them
and the tombstones into the index. Filtered searches go to Lance (exact, pre-filtered).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from retrieval.ann import structures as faiss_ann
from retrieval.errors import IndexFormatError
from retrieval.store.faiss_search import clean

log = logging.getLogger(__name__)
FAISS_KINDS = ("ivf_pq_fs", "ivf_flat", "ivf_sq8", "hnsw", "ivf_pq_disk")  # the last: lance_disk
FAISS_SEARCH_KEYS = ("nprobe", "k_factor", "efSearch")  # the sidecar's knobs (``retrieval.ann.config.SearchKnobs``)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Sidecar:
    """The FAISS index of one Lance table (loaded on first search)."""

    filters = False  # whether ``search_filtered`` answers filtered searches (``lance_disk``); else Lance does

    def __init__(self, folder: Path, table: str, record: dict):
        self.folder = Path(folder)
        self.table = table
        self.record = record
        self._index = None
        tomb = self.folder / f"{table}.tomb.npy"
        self.tomb = np.load(tomb) if tomb.exists() else np.zeros(0, np.int64)

    @classmethod
    def open(cls, folder: Path, table: str) -> "Sidecar | None":
        """The table's sidecar, or None when it has none."""
        meta = Path(folder) / f"{table}.json"
        if not meta.exists():
            return None
        try:
            record = json.loads(meta.read_text())
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{meta}: unreadable ANN record ({exc}); "
                                   "run `clipdex optimize` to rebuild it") from exc
        return cls(folder, table, record)

    @property
    def kind(self) -> str:
        return self.record["kind"]

    @property
    def built_max_id(self) -> int:
        return int(self.record.get("built_max_id", -1))

    def index(self):
        if self._index is None:
            import faiss  # heavy optional dependency, loaded on first ANN search

            path = self.folder / f"{self.table}.faiss"
            try:
                self._index = faiss.read_index(str(path))
            except RuntimeError as exc:
                raise IndexFormatError(f"{path}: the ANN index file is missing or damaged ({str(exc)[:120]}); "
                                       f"run `clipdex optimize --rebuild`") from None
        return self._index

    def search(self, xq: np.ndarray, k: int, params: dict) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (q, k) scores and ids from the index, tombstoned ids dropped (over-fetched)."""
        index = self.index()
        fetch = max(1, min(k + len(self.tomb), index.ntotal))
        D, I = clean(*faiss_ann.search(index, xq, fetch, faiss_ann.SearchParams(self.kind, params)))
        if len(self.tomb):
            drop = np.isin(I, self.tomb)
            D[drop], I[drop] = -np.inf, -1
        return D, I

    def delete(self, ids: np.ndarray) -> None:
        """Tombstone ``ids`` (written before the rows go, so a crash leaves missing results, never ghosts)."""
        ids = np.asarray(ids, np.int64)
        ids = ids[ids <= self.built_max_id]
        if len(ids):
            self.tomb = np.union1d(self.tomb, ids)
            self._save_tomb()

    def _save_tomb(self) -> None:
        path = self.folder / f"{self.table}.tomb.npy"
        if not len(self.tomb):
            path.unlink(missing_ok=True)
            return
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, self.tomb)
        os.replace(tmp, path)

    def fold(self, blocks: Iterable[tuple[np.ndarray, np.ndarray]], max_id: int) -> int:
        """Add the rows of ``blocks`` (ids, x) built since, drop the tombstones, rewrite; returns rows added."""
        index = self.index()
        added = 0
        for ids, x in blocks:
            index.add_with_ids(np.ascontiguousarray(x, np.float32), np.asarray(ids, np.int64))
            added += len(ids)
        if len(self.tomb):
            import faiss  # heavy optional dependency

            try:
                index.remove_ids(faiss.IDSelectorBatch(self.tomb))
                self.tomb = np.zeros(0, np.int64)
            except RuntimeError:  # refined and graph structures cannot remove: the tombstones stay (see ``stale``)
                pass
        self.record.update(built_max_id=int(max_id), built_rows=int(index.ntotal))
        self._write(index)
        self._save_tomb()
        return added

    def stale(self, fraction: float = 0.1) -> bool:
        """Whether so many rows are tombstones (over ``fraction`` of the built rows) that a rebuild is due."""
        return len(self.tomb) > fraction * max(int(self.record.get("built_rows", 0)), 1)

    @classmethod
    def build(cls, folder: Path, table: str, kind: str, factory: str, build: dict, dim: int, sample: np.ndarray,
              blocks: Iterable[tuple[np.ndarray, np.ndarray]], max_id: int) -> "Sidecar":
        """Train ``factory`` on ``sample`` (m, d), add every (ids, x) block, write the files."""
        index = faiss_ann.build_index(factory, dim, sample, blocks, build)
        side = cls(folder, table, {"kind": kind, "factory": factory, "build": dict(build),
                                   "built_max_id": int(max_id), "built_rows": int(index.ntotal)})
        side.tomb = np.zeros(0, np.int64)
        side._save_tomb()
        side._write(index)
        side._index = index
        return side

    def _write(self, index) -> None:
        import faiss  # heavy optional dependency

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.table}.faiss"
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
        self.record["memory_bytes"] = self.record["disk_bytes"] = int(path.stat().st_size)  # read whole on search
        _write_atomic(self.folder / f"{self.table}.json", json.dumps(self.record).encode())

    def drop(self) -> None:
        """Remove the files (the record first: without it the table is searched by Lance)."""
        for suffix in (".json", ".faiss", ".tomb.npy"):
            (self.folder / f"{self.table}{suffix}").unlink(missing_ok=True)


BUILD_KEYS = ("num_partitions", "num_sub_vectors", "m", "ef_construction", "num_bits", "max_iterations",
              "sample_rate")  # Lance's own create_index parameters


def index_config(build: dict):
    """The lancedb index config object for a build record {"index_type": "IVF_PQ", "num_partitions": ...}."""
    import lancedb.index as li  # heavy optional dependency (the Lance backend)

    cls = {"IVF_PQ": li.IvfPq, "IVF_FLAT": li.IvfFlat, "IVF_SQ": li.IvfSq, "IVF_HNSW_SQ": li.HnswSq,
           "IVF_HNSW_PQ": li.HnswPq, "IVF_HNSW_FLAT": li.HnswFlat}[build["index_type"]]
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in build.items() if k in names}
    if "accelerator" in names and _cuda():
        kwargs["accelerator"] = "cuda"
    return cls(distance_type="dot", **kwargs)


def btree_config():
    import lancedb.index as li  # heavy optional dependency (the Lance backend)

    return li.BTree()


def _cuda() -> bool:
    try:
        import torch  # heavy optional dependency: only asked whether a GPU can train the index

        return bool(torch.cuda.is_available())
    except ImportError:
        return False

"""The at-scale FAISS structure beside a Lance table, ``ivf_pq_disk``: 4-bit fast-scan PQ codes scanned in memory,
candidates re-ranked by their full vectors read from disk (a memory-mapped float16 file), not from a copy in RAM.

Files, under ``<index>/lance/_ann/`` beside the other sidecars' (``lance_ann``)::

    <table>.faiss       IVF{nlist},PQ{m}x4fs without an id map: its labels are *ordinals*, ranks of the row ids
    <table>.ids.npy     (n,) int64 the row ids, sorted: ordinal -> id, and id -> ordinal by binary search
    <table>.pos.npy     (n,) int64 ordinal -> row of the vector file
    <table>.f16.npy     (n, d) float16 the vectors, ordered by inverted list (rows a probe returns lie together)
    <table>.json        the record, written last

Only the codes (m/2 + 8 bytes a vector) and the centroids are in anonymous memory; the three arrays are mapped, so
the page cache holds what searches touch. Rows added after the build are appended (ordinals and vector rows at the
end); deleted rows are tombstones until a rebuild. A filter is answered by the structure itself: the matching ids
become a bitmap of ordinals handed to faiss (``IDSelectorBitmap``) with the probe widened, or, when few rows match
(``EXACT_FILTER_ROWS``), an exact scan of just those rows' vectors; both return k matching rows when k match.
"""
from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from retrieval.ann import structures as faiss_ann
from retrieval.ann.refine import exact_subset, refine, widen
from retrieval.errors import IndexFormatError
from retrieval.store.base import arrow_to_vectors
from retrieval.store.lance_ann import Sidecar, _write_atomic

log = logging.getLogger(__name__)
KIND = "ivf_pq_disk"
EXACT_FILTER_ROWS = 200_000  # a filter matching at most this many rows is answered exactly from their vectors
SUFFIXES = (".json", ".faiss", ".ids.npy", ".pos.npy", ".f16.npy", ".tomb.npy")
Blocks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def open_sidecar(folder: Path, table: str) -> Sidecar | None:
    """The table's FAISS index beside it, of the class its record names (None when it has none)."""
    side = Sidecar.open(folder, table)
    if side is not None and side.kind == KIND:
        return DiskSidecar(side.folder, table, side.record)
    return side


def list_order(index) -> np.ndarray:
    """The labels of an IVF index list by list, (ntotal,) int64: where each label's row goes in a list-ordered
    file."""
    import faiss  # heavy optional dependency

    invlists = faiss.extract_index_ivf(index).invlists
    out = []
    for lst in range(invlists.nlist):
        size = invlists.list_size(lst)
        if size:
            ptr = invlists.get_ids(lst)
            out.append(faiss.rev_swig_ptr(ptr, size).copy())
            invlists.release_ids(lst, ptr)
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


class DiskSidecar(Sidecar):
    """``ivf_pq_disk``: searched like any sidecar, through ``search`` (and ``search_filtered``)."""

    filters = True  # answers filtered searches itself (``LanceStore.search``)

    def __init__(self, folder: Path, table: str, record: dict):
        super().__init__(folder, table, record)
        self._arrays: tuple | None = None

    def _path(self, suffix: str) -> Path:
        return self.folder / f"{self.table}{suffix}"

    def index(self):
        if self._index is None:
            import faiss  # heavy optional dependency

            path = self._path(".faiss")
            try:  # mapped where faiss can; fast-scan lists are read into memory (they are what is scanned)
                self._index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            except RuntimeError as exc:
                raise IndexFormatError(f"{path}: the ANN index file is missing or damaged ({str(exc)[:120]}); "
                                       f"run `clipdex optimize --rebuild`") from None
        return self._index

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids (n,), pos (n,), vectors (n, d) float16), memory-mapped read-only."""
        if self._arrays is None:
            try:
                self._arrays = tuple(np.load(self._path(s), mmap_mode="r") for s in (".ids.npy", ".pos.npy",
                                                                                     ".f16.npy"))
            except (OSError, ValueError) as exc:
                raise IndexFormatError(f"{self.folder}: a vector file of the ANN index is missing or damaged "
                                       f"({exc}); run `clipdex optimize --rebuild`") from None
        return self._arrays

    def _fetch(self, positions: np.ndarray) -> np.ndarray:
        return self.arrays()[2][positions]

    def _finish(self, D: np.ndarray, O: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Ordinals -> ids, tombstones dropped."""
        ids = self.arrays()[0]
        I = np.where(O >= 0, ids[np.maximum(O, 0)], -1)
        if len(self.tomb):
            drop = np.isin(I, self.tomb)
            D, I = np.where(drop, -np.inf, D).astype(np.float32), np.where(drop, -1, I)
        return D[:, :k], I[:, :k]

    def _candidates(self, xq: np.ndarray, k: int, params: dict, nprobe: int | None = None, sel=None):
        import faiss  # heavy optional dependency

        index = self.index()
        sp = faiss.SearchParametersIVF()
        sp.nprobe = int(nprobe or params.get("nprobe", 16))
        if sel is not None:
            sp.sel = sel
        fetch = max(k, int(round(k * float(params.get("k_factor", 8)))))
        _, O = index.search(np.ascontiguousarray(xq, np.float32), min(fetch, index.ntotal), params=sp)
        O = np.asarray(O, np.int64)
        pos = self.arrays()[1]
        return refine(xq, O, np.where(O >= 0, pos[np.maximum(O, 0)], 0), self._fetch, k + len(self.tomb))

    def iter_rows(self, batch_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The vector file front to back, ``batch_rows`` at a time: (ids (b,) int64, vectors (b, d) float32), the
        rows of one inverted list together; tombstoned rows skipped."""
        ids, pos, vec = self.arrays()
        owner = np.empty(len(pos), np.int64)
        owner[pos] = ids                                 # vector row -> its id
        for s in range(0, len(vec), batch_rows):
            b_ids, x = owner[s:s + batch_rows], np.asarray(vec[s:s + batch_rows], np.float32)
            live = ~np.isin(b_ids, self.tomb) if len(self.tomb) else slice(None)
            yield b_ids[live], x[live]

    def search(self, xq: np.ndarray, k: int, params: dict, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (q, k) scores (float16 vectors against float32 queries) and ids; among the ids ``allowed`` (m,)
        when given (``search_filtered``)."""
        if allowed is not None:
            return self.search_filtered(xq, k, params, allowed)
        D, O = self._candidates(xq, k, params)
        return self._finish(D, O, k)

    def search_filtered(self, xq: np.ndarray, k: int, params: dict, allowed: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k among the rows whose ids are in ``allowed`` (m,) int64, built rows only. k of them per query when k
        such rows are built: exact over their vectors when few match, else the structure probed with a bitmap of
        them and the probe widened; queries still short are answered exactly."""
        import faiss  # heavy optional dependency

        ids, pos, _ = self.arrays()
        allowed = np.setdiff1d(np.asarray(allowed, np.int64), self.tomb)
        ords = np.searchsorted(ids, allowed)
        ords = ords[(ords < len(ids)) & (ids[np.minimum(ords, len(ids) - 1)] == allowed)]
        want = min(k, len(ords))
        if len(ords) <= EXACT_FILTER_ROWS:
            return self._finish(*exact_subset(xq, ords, pos[ords], self._fetch, k), k)
        bits = np.zeros((len(ids) + 7) // 8, np.uint8)
        np.bitwise_or.at(bits, ords >> 3, (1 << (ords & 7)).astype(np.uint8))
        sel = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
        nlist = faiss.extract_index_ivf(self.index()).nlist
        nprobe = widen(int(params.get("nprobe", 16)), nlist, len(ords), len(ids))
        D, O = self._candidates(xq, k, params, nprobe, sel)
        short = (O[:, :k] >= 0).sum(1) < want
        while short.any() and nprobe < nlist:
            nprobe = min(nlist, nprobe * 4)
            D[short], O[short] = self._candidates(xq[short], k, params, nprobe, sel)
            short = (O[:, :k] >= 0).sum(1) < want
        if short.any():
            D[short, :k], O[short, :k] = exact_subset(xq[short], ords, pos[ords], self._fetch, k)
        return self._finish(D, O, k)

    def fold(self, blocks: Iterable[tuple[np.ndarray, np.ndarray]], max_id: int) -> int:
        """Append rows added since the build (ids above every built one): codes, ordinals and vector rows."""
        ids, pos, vec = self.arrays()
        new_ids, new_x = [], []
        for b_ids, x in blocks:
            new_ids.append(np.asarray(b_ids, np.int64))
            new_x.append(np.asarray(x, np.float32))
        added = int(sum(len(b) for b in new_ids))
        if added:
            b_ids = np.concatenate(new_ids)
            order = np.argsort(b_ids)
            b_ids, x = b_ids[order], np.concatenate(new_x)[order]
            n = len(ids)
            index = read_writable(self._path(".faiss"))
            index.add_with_ids(np.ascontiguousarray(x), np.arange(n, n + added, dtype=np.int64))
            self._index = self._arrays = None
            _append_rows(self._path(".f16.npy"), x.astype(np.float16))
            _save_arrays(self.folder, self.table, np.concatenate([ids, b_ids]),
                         np.concatenate([pos, np.arange(len(vec), len(vec) + added)]), None)
            self._write(index)
            self._index = index
        self.record.update(built_max_id=int(max_id), built_rows=int(self.index().ntotal))
        self._write_record()
        return added

    def _write_record(self) -> None:
        self.record["disk_bytes"] = int(sum(self._path(s).stat().st_size for s in SUFFIXES[1:5]
                                            if self._path(s).exists()))
        _write_atomic(self._path(".json"), json.dumps(self.record).encode())

    def _write(self, index) -> None:
        import faiss  # heavy optional dependency

        tmp = self._path(".faiss.tmp")
        faiss.write_index(index, str(tmp))
        os.replace(tmp, self._path(".faiss"))
        self.record["memory_bytes"] = int(self._path(".faiss").stat().st_size)  # the codes and centroids
        self._write_record()

    def drop(self) -> None:
        for suffix in SUFFIXES:
            self._path(suffix).unlink(missing_ok=True)

    @classmethod
    def build_disk(cls, folder: Path, table: str, factory: str, build: dict, dim: int, sample: np.ndarray,
                   blocks: Blocks, ids: np.ndarray, max_id: int) -> "DiskSidecar":
        """Train ``factory`` (an IVF fast-scan PQ without refinement) on ``sample`` (m, d), add every row of
        ``blocks()`` (a fresh stream of (ids, x) each call; read twice) labelled by the rank of its id in ``ids``
        (n,), then write the vectors as float16 in inverted-list order. Memory: the codes plus 24 bytes a row."""
        folder.mkdir(parents=True, exist_ok=True)
        ids = np.unique(np.asarray(ids, np.int64))
        index = faiss_ann.new_index(factory, dim, build)
        t0 = time.perf_counter()
        faiss_ann.train(index, sample)
        t1 = time.perf_counter()
        index = faiss_ann.fill_by_rank(index, ids, blocks())  # here, or by Ray tasks (optimize --engine ray)
        t2 = time.perf_counter()
        order = list_order(index)  # row r of the vector file holds ordinal order[r]
        pos = np.empty(len(ids), np.int64)
        pos[order] = np.arange(len(order))
        vec_path = folder / f"{table}.f16.npy.tmp"
        vec = np.lib.format.open_memmap(vec_path, mode="w+", dtype=np.float16, shape=(len(ids), dim))
        for b_ids, x in blocks():
            rows = pos[np.searchsorted(ids, b_ids)]
            sort = np.argsort(rows)
            vec[rows[sort]] = np.asarray(x, np.float32)[sort].astype(np.float16)
        vec.flush()
        del vec
        os.replace(vec_path, folder / f"{table}.f16.npy")
        log.info("%s: trained on %d rows in %.0f s, %d rows added in %.0f s, their vectors written in list order in "
                 "%.0f s", table, len(sample), t1 - t0, index.ntotal, t2 - t1, time.perf_counter() - t2)
        _save_arrays(folder, table, ids, pos, None)
        side = cls(folder, table, {"kind": KIND, "factory": factory, "build": dict(build),
                                   "built_max_id": int(max_id), "built_rows": int(index.ntotal),
                                   "refine": "float16 vectors on disk, memory-mapped, in inverted-list order"})
        side.tomb = np.zeros(0, np.int64)
        side._save_tomb()
        side._write(index)
        return side


def build_sidecar(store, name: str, want: dict, folder: Path) -> Sidecar:
    """Build the FAISS structure ``want`` ({"kind", "factory", "build"}) over a Lance store's table ``name`` into
    ``folder``: trained on a sample, every row added (``ivf_pq_disk``: the table is streamed twice, ids first)."""
    rows = int(want["build"].get("train_rows") or 100_000)
    _, sample = store.sample_vectors(name, rows)
    if want["kind"] == KIND:
        ids = iter_ids(store.scan(name, ["id"]))
        return DiskSidecar.build_disk(folder, name, want["factory"], want["build"], store.dim, sample,
                                      lambda: store.iter_vectors(name), ids, store.max_id(name))
    return Sidecar.build(folder, name, want["kind"], want["factory"], want["build"], store.dim, sample,
                         store.iter_vectors(name), store.max_id(name))


def sample_by_offset(table, n: int, rows: int, dim: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` of a LanceDB ``table``'s ``n`` rows drawn uniformly without replacement and read by offset (random
    access: a few seconds at 10M rows, where a pass reads the whole table): (ids (m,) int64, vectors (m, d)
    float32) in table order (m = rows unless some vectors are null)."""
    pos = np.sort(np.random.default_rng(seed).choice(n, rows, replace=False)).tolist()
    ids, xs = [], []
    for s in range(0, rows, 65536):
        part = table.take_offsets(pos[s:s + 65536]).select(["id", "vector"]).to_arrow()
        x, valid = arrow_to_vectors(part.column(1).combine_chunks(), dim)   # as iter_vectors: null rows left out
        ids.append(part.column(0).to_numpy().astype(np.int64)[valid])
        xs.append(x)
    return np.concatenate(ids), np.concatenate(xs)


def read_writable(path: Path):
    """The index file read into memory (to add rows to it)."""
    import faiss  # heavy optional dependency

    return faiss.read_index(str(path))


def _append_rows(path: Path, rows: np.ndarray) -> None:
    """Append ``rows`` (m, d) to the .npy file at ``path`` in place: the data at the end, then the header's row
    count (numpy pads headers to 64 bytes, so it keeps its length; otherwise the file is rewritten once)."""
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = np.lib.format._read_array_header(f, version)
        start = f.tell()
        new = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
               "shape": (shape[0] + len(rows), *shape[1:])}
        f.seek(0)
        header = io.BytesIO()
        np.lib.format._write_array_header(header, new, version)
        if len(header.getvalue()) == start:
            f.seek(0, os.SEEK_END)
            f.write(np.ascontiguousarray(rows, dtype).tobytes())
            f.seek(0)
            f.write(header.getvalue())
            return
    old = np.load(path, mmap_mode="r")
    _save_arrays(path.parent, path.name.removesuffix(".f16.npy"), None, None, np.concatenate([old, rows]))


def _save_arrays(folder: Path, table: str, ids: np.ndarray, pos: np.ndarray, vec: np.ndarray | None) -> None:
    for suffix, arr in ((".ids.npy", ids), (".pos.npy", pos), (".f16.npy", vec)):
        if arr is None:
            continue
        tmp = folder / f"{table}{suffix}.tmp.npy"
        np.save(tmp, arr)
        os.replace(tmp, folder / f"{table}{suffix}")


def iter_ids(batches: Iterator) -> np.ndarray:
    """The ``id`` column of a stream of record batches, (n,) int64."""
    parts = [b.column(0).to_numpy().astype(np.int64) for b in batches]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)

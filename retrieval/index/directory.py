"""The index directory: a manifest (``clipdex.json``) plus one store backend's files.

``create_index`` makes one, ``open_index`` opens one. The manifest pins the model that built the index (querying
with another is refused with ``ModelMismatch``), the embedding dimension, metric, backend, the tables with their
row counts and search structures, and the format version (a newer one is refused, older ones are migrated).

The raw-vector API needs no encoder::

    ix = create_index("vecs.clipdex", dim=512, model="none")
    ids = ix.add_vectors("images", vectors, {"path": paths})
    D, I = ix.search_vectors("images", queries, k=10)
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import re
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from retrieval.ann.config import AnnConfig
from retrieval.ann.plan import DEFAULT_RECALL
from retrieval.encode.encoder import load_encoder
from retrieval.errors import IndexExists, IndexFormatError, IndexLocked, IndexNotFound, InvalidInput, ModelMismatch
from retrieval.index.manifest import BACKENDS, FORMAT_VERSION, MANIFEST, read_manifest
from retrieval.index.schemas import base_fields
from retrieval.index.tune import tune_table
from retrieval.io.shard_meta import column_name
from retrieval.models.factory import parse_model_spec
from retrieval.store.base import Store, check_queries, vectors_to_arrow
from retrieval.store.faiss import FaissStore
from retrieval.store.lance import LanceStore
from retrieval.version import __version__

NO_MODEL = "none"
LOCK = ".lock"
# raised by opening a store with missing or damaged files (pyarrow, lance, json and a state.json without a field)
STORE_ERRORS = (OSError, ValueError, KeyError, RuntimeError, pa.ArrowException)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _creation_leftovers(path: Path) -> bool:
    """True when ``path`` holds only what an interrupted ``create_index`` leaves: the lock file, temporary
    manifests and an empty backend folder (no manifest, no rows)."""
    for p in path.iterdir():
        if p.name == LOCK or (p.name.startswith(f".{MANIFEST}.") and p.name.endswith(".tmp") and p.is_file()):
            continue
        if p.name in BACKENDS and p.is_dir() and not any(q.is_file() for q in p.rglob("*")):
            continue
        return False
    return True


class Index:
    """An open index directory. Use ``create_index`` / ``open_index``; close (or use as a context manager)."""

    def __init__(self, path: Path, manifest: dict, writable: bool):
        self.path = path
        self.manifest = manifest
        self.writable = writable
        self._lock_fd = None
        if writable:
            self._lock()
        try:
            self.store = self._open_checked_store()
        except BaseException:
            self._unlock()
            raise
        for name, info in manifest.get("tables", {}).items():
            params = info.get("ann", {}).get("params")
            if (params or "note" in info.get("ann", {})) and self.backend == "lance":
                self.store.set_search_params(name, params or {}, record=info["ann"])  # tuned recall, notes kept too
        self._next_id: dict[str, int] = {}
        self._changed = False  # the manifest is rewritten on close only when rows or tables changed

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def model(self) -> str:
        return self.manifest["model"]

    @property
    def backend(self) -> str:
        return self.manifest["backend"]

    def tables(self) -> list[str]:
        return self.store.table_names()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def _open_store(self) -> Store:
        if self.backend == "lance":
            return LanceStore(self.path / "lance", self.dim)
        return FaissStore(self.path / "faiss", self.dim, writer=self.writable)

    def _open_checked_store(self) -> Store:
        """Open the backend and read each table's schema and row count, so that a missing or damaged store file
        (a Parquet part or state.json, a Lance dataset or its _versions) is one IndexFormatError line here."""
        data, tables = self.path / self.backend, self.manifest.get("tables", {})
        for attempt in (1, 2):  # look twice: a writer may have replaced a Parquet part while we read the first list
            name = None
            try:
                if tables and not data.is_dir():
                    raise FileNotFoundError(f"the folder {data} is missing")
                store = self._open_store()
                have = set(store.table_names())
                for name, info in tables.items():
                    if name in have:
                        store.schema(name)
                        store.count(name)
                    elif info.get("rows"):
                        raise FileNotFoundError(f"no {self.backend} table {name!r} in {data}")
                return store
            except STORE_ERRORS as exc:
                if attempt == 1:
                    continue
                what = f"no field {exc}" if isinstance(exc, KeyError) else (str(exc).strip().splitlines() or [""])[0]
                what = re.sub(r", /\S+\.rs:\d+:\d+", "", what)[:200] or type(exc).__name__  # lance's source location
                raise IndexFormatError(f"{data}: the stored data{f' of table {name!r}' if name else ''} is missing "
                                       f"or damaged ({what}); restore the index folder from a backup or rebuild the "
                                       f"index in a new folder") from exc

    def _lock(self) -> None:
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise IndexLocked(f"{self.path} is being written by another process; wait for it to finish") from None
            raise
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def save_manifest(self) -> None:
        self.manifest["updated"] = now()
        data = json.dumps(self.manifest, indent=2, sort_keys=False).encode()
        tmp = self.path / f".{MANIFEST}.{uuid.uuid4().hex[:6]}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.path / MANIFEST)

    def refresh_counts(self) -> None:
        tables = self.manifest.setdefault("tables", {})
        for name in self.store.table_names():
            info = tables.setdefault(name, {})
            info["rows"] = self.store.count(name)
            info["ann"] = self.store.ann_info(name)

    def close(self) -> None:
        if self.writable and self._changed:
            self.store.flush()
            self.refresh_counts()
            self.save_manifest()
            self._changed = False
        self.store.close()
        self._unlock()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check_model(self, spec) -> None:
        """Raise ``ModelMismatch`` unless ``spec`` is the model this index was built with."""
        if self.model == NO_MODEL:
            raise ModelMismatch(f"{self.path} holds vectors from an unknown model: query it with vectors, "
                                "not text or images")
        if str(parse_model_spec(spec)) != self.model:
            raise ModelMismatch(f"{self.path} was built with {self.model}, not {spec}; "
                                f"query it with --model {self.model} (the default)")

    def encoder(self, device: str | None = None, precision: str | None = None):
        """The encoder named by the manifest (loaded once per process). The first call fixes device and precision
        for this index object; later calls without arguments return the same encoder."""
        cached = getattr(self, "_encoder", None)
        if cached is not None and device in (None, cached.device) and precision in (None, cached.precision):
            return cached
        self.check_model(self.model)
        self._encoder = load_encoder(self.model, device=device, precision=precision)
        return self._encoder

    # -- tables and rows ---------------------------------------------------------------------------------------
    def ensure_table(self, name: str, extra: Sequence[pa.Field] = (), half: bool = False) -> pa.Schema:
        """Create ``name`` with clipdex's columns for it (plus ``extra``; float16 vectors with ``half`` where the store
        keeps them: ``Store.half_vectors``), or add missing ``extra`` columns. A new
        column a store cannot name (``a.b``, a backquote, a leading ``_``) is refused before anything changes: Lance
        would otherwise keep refusing the table's schema on every later run."""
        self._require_writable()
        have = set(self.store.schema(name).names) if self.store.has_table(name) else set()
        bad = [f.name for f in extra if f.name not in have and column_name(f.name)[0] != f.name]
        if bad:
            raise InvalidInput(f"column {bad[0]!r} cannot be stored in table {name!r}: a column name holds letters, "
                               "digits and _ and does not start with _")
        if not self.store.has_table(name):
            self._changed = True
            fields = base_fields(name, self.dim, half and self.store.half_vectors)
            names = {f.name for f in fields}
            self.store.create_table(name, pa.schema(fields + [f for f in extra if f.name not in names]))
            self.manifest.setdefault("tables", {})[name] = {"rows": 0, "ann": {"kind": "flat", "params": {}}}
            self.save_manifest()
        else:
            new = [f for f in extra if f.name not in have]
            if new:
                self._changed = True
                self.store.add_columns(name, new)
        return self.store.schema(name)

    def next_ids(self, table: str, n: int) -> np.ndarray:
        """Allocate ``n`` fresh row ids (stable, never reused while the index is open)."""
        if table not in self._next_id:
            self._next_id[table] = self.store.max_id(table) + 1 if self.store.has_table(table) else 0
        start = self._next_id[table]
        self._next_id[table] = start + n
        return np.arange(start, start + n, dtype=np.int64)

    def add_rows(self, table: str, rows: pa.Table) -> None:
        """Append rows (with ids and unit vectors) to a table in one atomic commit."""
        self._require_writable()
        self._changed = True
        self.store.add(table, rows)

    def commit_fragments(self, table: str, fragments: Sequence[str]) -> int:
        """Append rows that other processes wrote as Lance fragments (``retrieval.store.lance_fragments``) in one
        atomic commit; returns their row count."""
        self._require_writable()
        self._changed = True
        return self.store.commit_fragments(table, fragments)

    def add_vectors(self, table: str, vectors: np.ndarray, metadata: dict | pa.Table | None = None,
                    normalize: bool = True) -> np.ndarray:
        """Raw-vector API: add (n, d) vectors with optional metadata columns; returns their ids.

        Vectors with NaN/inf values or zero norm are refused (``InvalidInput``); others are L2-normalised.
        """
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidInput(f"vectors have shape {x.shape}; this index holds {self.dim}-dimensional vectors")
        norms = np.linalg.norm(x, axis=1)
        bad = ~np.isfinite(x).all(1) | (norms == 0)
        if bad.any():
            raise InvalidInput(f"{int(bad.sum())} vectors are NaN, infinite or zero "
                               f"(first at row {int(np.argmax(bad))})")
        if normalize:
            x = x / norms[:, None]
        meta = metadata if isinstance(metadata, pa.Table) else pa.table(metadata or {})
        if len(meta) not in (0, len(x)) or (len(meta) == 0 and meta.num_columns):
            raise InvalidInput(f"{len(meta)} metadata rows for {len(x)} vectors")
        extra = [f for f in meta.schema if f.name not in ("id", "vector")]
        schema = self.ensure_table(table, extra)
        ids = self.next_ids(table, len(x))
        cols = {}
        for f in schema:
            if f.name == "id":
                cols["id"] = pa.array(ids)
            elif f.name == "vector":
                cols["vector"] = vectors_to_arrow(x, self.dim)
            elif f.name in meta.column_names:
                cols[f.name] = meta.column(f.name).cast(f.type)
            else:
                cols[f.name] = pa.nulls(len(x), f.type)
        self.add_rows(table, pa.table(cols, schema=schema))
        return ids

    def search_vectors(self, table: str, xq: np.ndarray, k: int = 10, where: str | None = None,
                       column: str = "vector", exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by cosine: xq (q, d) -> (D (q, k) float32, I (q, k) int64 ids), padded with -inf / -1.
        Queries are L2-normalised here (zero rows are refused)."""
        schema = self.store.schema(table)
        if column not in schema.names or not pa.types.is_fixed_size_list(schema.field(column).type):
            raise InvalidInput(f"table {table!r} has no vector column {column!r} to search; read it with "
                               f"`clipdex info` or any Lance/Parquet reader")
        xq = check_queries(xq, self.dim)
        norms = np.linalg.norm(xq, axis=1, keepdims=True)
        if (norms == 0).any():
            raise InvalidInput("query vectors contain zero rows")
        return self.store.search(table, xq / norms, k, where=where, column=column, exact=exact)

    def delete(self, table: str, ids: Sequence[int]) -> int:
        self._require_writable()
        self._changed = True
        return self.store.delete(table, ids)

    def optimize(self, table: str, ann: AnnConfig | None = None) -> dict:
        """Compact the table and build or refresh its search structure (``ann``: what to build; None keeps the one
        there is); a freshly built ANN index is then tuned to its recall target (unless ``ann.params.tune`` is False:
        ``optimize.optimize_table`` tunes itself). An unknown kind is refused before anything changes."""
        self._require_writable()
        done = self.store.optimize(table, ann)
        if done.get("rebuilt") and (ann is None or ann.params.tune):
            target = ann.params.recall if ann is not None else self.store.ann_info(table).get("target", DEFAULT_RECALL)
            done["tuning"] = tune_table(self.store, table, float(target))
        self.refresh_counts()
        self.save_manifest()
        return done

    def _require_writable(self) -> None:
        if not self.writable:
            raise InvalidInput(f"{self.path} was opened read-only")

    def info(self) -> dict:
        """Manifest, tables with live row counts and search structures, error summary, size on disk."""
        tables = {}
        for name in self.store.table_names():
            tables[name] = {"rows": self.store.count(name), "ann": self.store.ann_info(name),
                            "columns": [f.name for f in self.store.schema(name)]}
        errors = {}
        if "errors" in tables:
            for batch in self.store.scan("errors", ["stage"]):
                for stage in batch.column(0).to_pylist():
                    errors[stage] = errors.get(stage, 0) + 1
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        keep = {k: v for k, v in self.manifest.items() if k != "tables"}
        return {**keep, "path": str(self.path), "tables": tables, "errors": errors, "size_bytes": size}


def create_index(path: str | Path, dim: int | None = None, model: str | None = None, backend: str = "lance",
                 exist_ok: bool = True) -> Index:
    """Create an index directory (or open the existing one, checking it was made with the same model).

    ``model``: a model spec (its dim is found by loading it when ``dim`` is None) or "none" for raw vectors.
    """
    path = Path(path).expanduser()
    if backend not in BACKENDS:
        raise InvalidInput(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    model_str = NO_MODEL if model == NO_MODEL else str(parse_model_spec(model))
    if (path / MANIFEST).is_file():
        if not exist_ok:
            raise IndexExists(f"an index already exists at {path}")
        ix = open_index(path, writable=True)
        if ix.model != model_str:
            ix.close()
            raise ModelMismatch(f"{path} was built with {ix.model}, not {model_str}")
        if ix.backend != backend:
            ix.close()
            raise IndexExists(f"{path} uses the {ix.backend} backend, not {backend}")
        return ix
    if path.exists() and (not path.is_dir() or not _creation_leftovers(path)):
        raise IndexExists(f"{path} exists and is not a clipdex index; choose a new or empty folder")
    if dim is None:
        if model_str == NO_MODEL:
            raise InvalidInput("a raw-vector index needs its dimension (dim=...)")
        dim = load_encoder(model_str).dim
    path.mkdir(parents=True, exist_ok=True)

    manifest = {"format": "clipdex", "format_version": FORMAT_VERSION, "clipdex_version": __version__,
                "model": model_str, "dim": int(dim), "metric": "cosine", "backend": backend,
                "created": now(), "updated": now(), "tables": {}}
    ix = Index(path, manifest, writable=True)  # IndexLocked while another process creates it
    if (path / MANIFEST).is_file():  # it finished creating the index while we were looking
        ix.close()
        return create_index(path, dim, model, backend, exist_ok)
    for tmp in path.glob(f".{MANIFEST}.*.tmp"):  # left by a creation that was killed (we hold the lock now)
        tmp.unlink()
    ix.save_manifest()
    return ix


def open_index(path: str | Path, writable: bool = False) -> Index:
    """Open an existing index directory; ``IndexNotFound`` when there is none, ``IndexFormatError`` when it was
    written by a newer clipdex."""
    path = Path(path).expanduser()
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        what = "does not exist" if not path.exists() else "is not a clipdex index (no clipdex.json)"
        raise IndexNotFound(f"{path} {what}")
    manifest, version = read_manifest(path)
    ix = Index(path, manifest, writable=writable)
    if writable and version < FORMAT_VERSION:
        ix.save_manifest()
    return ix

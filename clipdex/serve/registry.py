"""The served indexes: each opened read-only once, its encoder loaded once, looked up by a short name."""
from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from retrieval.errors import ClipdexError, InvalidInput, TableNotFound
from retrieval.index.directory import NO_MODEL, Index, open_index
from retrieval.index.freshness import index_state
from retrieval.index.manifest import read_manifest
from retrieval.store.base import VECTOR_COLUMNS, arrow_to_vectors

log = logging.getLogger(__name__)
SEARCHABLE = ("images", "frames", "videos", "texts")
MAX_ID = 2**63 - 1


class NotFound(ClipdexError):
    """A name or id the service does not hold (answered with 404)."""


def index_name(path: Path) -> str:
    """``~/photos.clipdex`` -> ``photos``: URL-safe, short."""
    name = path.name[:-len(".clipdex")] if path.name.endswith(".clipdex") else path.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "index"


@dataclass
class ServedIndex:
    name: str
    index: Index
    encoder: object = None
    batcher: object = None      # set by the app: encodes this index's queries together
    state: tuple = ()           # the index's committed state on disk when it was opened (retrieval.index.freshness)
    _schemas: dict = field(default_factory=dict)
    _filled: dict = field(default_factory=dict)

    @property
    def has_model(self) -> bool:
        return self.index.model != NO_MODEL

    def tables(self) -> list[str]:
        return [t for t in self.index.tables() if t in SEARCHABLE]

    def schema(self, table: str) -> pa.Schema:
        if table not in self._schemas:
            if table not in self.tables():
                raise TableNotFound(f"index {self.name!r} has no table {table!r}; it has: "
                                    f"{', '.join(self.tables()) or 'none'}")
            self._schemas[table] = self.index.store.schema(table)
        return self._schemas[table]

    def has_vectors(self, table: str, column: str) -> bool:
        """Whether any row of ``table`` has a ``column`` vector (caption vectors exist only for captioned rows)."""
        if (table, column) not in self._filled:
            ok = column in self.schema(table).names
            self._filled[(table, column)] = ok and self.index.store.count(table, where=f"{column} IS NOT NULL") > 0
        return self._filled[(table, column)]

    def describe(self) -> dict:
        """What ``GET /api/indexes`` shows: name, model, dim, backend, tables with rows and ANN state."""
        tables = {}
        for t in self.tables():
            tables[t] = {"rows": self.index.store.count(t), "ann": jsonable(self.index.store.ann_info(t)),
                         "columns": [f.name for f in self.schema(t) if f.name not in VECTOR_COLUMNS]}
        return {"name": self.name, "model": self.index.model, "dim": self.index.dim, "backend": self.index.backend,
                "searchable_by": ["text", "image", "vector", "like_id"] if self.has_model else ["vector", "like_id"],
                "tables": tables}

    def row(self, table: str, row_id: int, columns: list[str] | None = None) -> dict:
        """One row's columns (no vectors) by id; ``NotFound`` when the table has no such row."""
        schema = self.schema(table)
        check_id(row_id, table, self.name)
        cols = columns or [f.name for f in schema if f.name not in VECTOR_COLUMNS
                           and not pa.types.is_fixed_size_list(f.type)]
        rows = self.index.store.take(table, np.array([row_id], np.int64), cols)
        if len(rows) == 0:
            raise NotFound(f"no row {row_id} in table {table!r} of index {self.name!r}")
        return rows.to_pylist()[0]

    def vector(self, table: str, row_id: int, column: str = "vector") -> np.ndarray:
        """A row's stored (d,) vector (for "more like this")."""
        if column not in self.schema(table).names:
            raise InvalidInput(f"table {table!r} has no vector column {column!r}")
        check_id(row_id, table, self.name)
        rows = self.index.store.take(table, np.array([row_id], np.int64), [column])
        if len(rows) == 0:
            raise NotFound(f"no row {row_id} in table {table!r} of index {self.name!r}")
        vec, valid = arrow_to_vectors(rows.column(column), self.index.dim)
        if not valid.all():
            raise InvalidInput(f"row {row_id} of {table!r} has no {column}")
        return vec[0]


def _state(path: Path, backend: str | None = None) -> tuple:
    """The index's committed state on disk (``backend`` read from its manifest when not given); () when it cannot
    be read now."""
    try:
        return index_state(path, backend or read_manifest(path)[0]["backend"])
    except (OSError, ValueError, KeyError, ClipdexError):
        return ()


def check_id(row_id: int, table: str, name: str) -> None:
    if not 0 <= row_id <= MAX_ID:
        raise NotFound(f"no row {row_id} in table {table!r} of index {name!r}")


class Registry:
    """The indexes a service holds, by name; ``open`` loads each model once, ``refresh`` opens again the indexes
    that changed on disk, ``close`` releases everything.

    A refresh never pauses answering: the new snapshot is opened beside the old one and swapped in by one dict
    assignment; requests that already hold the old one finish on it, and it is closed ``grace`` seconds later
    (longer than any request may run)."""

    def __init__(self, paths: list[str], device: str | None = None, grace: float = 60.0):
        self.paths = [Path(p).expanduser() for p in paths]
        self.device = device
        self.grace = grace
        self.items: dict[str, ServedIndex] = {}
        self._retired: list[tuple[float, ServedIndex]] = []   # (when to close, an index swapped out)

    def open(self) -> None:
        encoders: dict[str, object] = {}
        try:
            for path in self.paths:
                state = _state(path)  # read before opening: a commit in between only causes one more refresh
                ix = open_index(path)
                name, n = index_name(path), 2
                while name in self.items:
                    name, n = f"{index_name(path)}-{n}", n + 1
                served = ServedIndex(name, ix, state=state)
                if served.has_model:   # one encoder per model, shared by the indexes built with it
                    if ix.model not in encoders:
                        encoders[ix.model] = ix.encoder(device=self.device)
                    served.encoder = encoders[ix.model]
                self.items[name] = served
                log.info("serving %s as %r (%s, tables %s)", path, name, ix.model, ", ".join(served.tables()))
        except BaseException:
            self.close()
            raise

    def refresh(self) -> list[str]:
        """Open again each index whose committed state changed since it was opened, swap it in, and close the
        snapshots retired more than ``grace`` seconds ago. Returns the names swapped. An index that cannot be
        opened right now (damaged, or changed to another model) keeps being served as it was, with a warning."""
        swapped = []
        for name, served in list(self.items.items()):
            path = served.index.path
            state = _state(path, served.index.backend)
            if state == served.state:
                continue
            try:
                ix = open_index(path)
            except ClipdexError as exc:
                log.warning("%s changed but cannot be opened again (%s); still serving the snapshot of %s", path,
                            exc, name)
                continue
            if (ix.model, ix.dim) != (served.index.model, served.index.dim):
                log.warning("%s now holds %s vectors; restart the service to serve them", path, ix.model)
                ix.close()
                served.state = state
                continue
            self.items[name] = ServedIndex(name, ix, served.encoder, served.batcher, state=state)
            self._retired.append((time.monotonic() + self.grace, served))
            swapped.append(name)
            log.info("serving %s again: new commits on disk", name)
        self._close_retired(time.monotonic())
        return swapped

    def _close_retired(self, now: float) -> None:
        due = [s for t, s in self._retired if t <= now]
        self._retired = [(t, s) for t, s in self._retired if t > now]
        for served in due:
            served.index.close()

    def close(self) -> None:
        for served in self.items.values():
            served.index.close()
        self.items.clear()
        self._close_retired(math.inf)

    def get(self, name: str | None) -> ServedIndex:
        if not name:
            if len(self.items) == 1:
                return next(iter(self.items.values()))
            raise InvalidInput(f"name the index: one of {', '.join(self.items)}")
        try:
            return self.items[name]
        except KeyError:
            raise NotFound(f"no index named {name!r}; served: {', '.join(self.items)}") from None

    def names(self) -> list[str]:
        return list(self.items)


def jsonable(v):
    """Arrow/numpy values -> JSON values (NaN/inf -> None, bytes left out, dates as ISO text)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items() if not isinstance(x, (bytes, bytearray))}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)

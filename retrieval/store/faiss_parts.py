"""The FAISS backend's truth: a table's Parquet parts and its state file.

``<table>.state.json`` says which parts are live, the schema, the ANN record, and three counters:

- ``generation``: bumped by every commit that changes the rows (add, delete, compaction). A derived ``.faiss``
  file is recorded in ``derived[column]`` with the generation it was built from and its size and mtime, so a file
  that is not the one recorded (copied in, or left by a crash) is never trusted.
- ``next_id``: above every id the table ever held: ids of deleted rows are never handed out again.
- ``next_part``: the next part number.

A commit writes the new parts, then replaces the state file atomically (the commit point). Parts a commit drops go
to ``garbage`` and are deleted ``GRACE_SECONDS`` later by a later commit, so a reader still holding the previous
state keeps reading a consistent snapshot; a reader that still finds a part gone gets :class:`PartGone` and
re-reads the state. Parts are written with page checksums, verified on read: a damaged part is an
``IndexFormatError``, never silently different vectors.
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

from retrieval.errors import IndexFormatError
from retrieval.store.base import arrow_to_vectors

log = logging.getLogger(__name__)
GRACE_SECONDS = 600.0  # dropped parts stay this long for readers of an older state


class PartGone(FileNotFoundError):
    """A part named by the state this process read is gone (a writer removed it since); the message is its path."""


def atomic_write(path: Path, data: bytes) -> None:
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


def vector_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if pa.types.is_fixed_size_list(f.type)]


def new_state(schema: pa.Schema) -> dict:
    return {"parts": [], "schema": _schema_to_b64(schema), "next_part": 1, "next_id": 0, "generation": 0,
            "ann": {"kind": "flat", "params": {}}, "derived": {}, "garbage": []}


class TableState:
    """One table's state file and its parts (read at construction; ``save`` commits)."""

    def __init__(self, root: Path, name: str):
        self.name = name
        self.state_path = root / f"{name}.state.json"
        self.parts_dir = root / f"{name}.parquet"
        try:
            state = json.loads(self.state_path.read_text())
            self.parts: list[str] = list(state["parts"])
            self.schema = _schema_from_b64(state["schema"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexFormatError(f"{self.state_path} is damaged ({str(exc).splitlines()[0][:120]}); "
                                   f"restore it from a backup or re-index") from None
        self.next_part: int = state.get("next_part", len(self.parts) + 1)
        self.next_id: int | None = state.get("next_id")  # None: a state written before ids were counted
        self.generation: int = int(state.get("generation", 0))
        self.ann: dict = state.get("ann", {"kind": "flat", "params": {}})
        self.legacy = "derived" not in state  # written before derived files were recorded
        self.derived: dict = state.get("derived", {})
        self.garbage: list = state.get("garbage", [])

    def save(self) -> None:
        state = {"parts": self.parts, "schema": _schema_to_b64(self.schema), "next_part": self.next_part,
                 "next_id": self.next_id, "generation": self.generation, "ann": self.ann,
                 "derived": self.derived, "garbage": self.garbage}
        atomic_write(self.state_path, json.dumps(state, indent=1).encode())

    # -- parts -------------------------------------------------------------------------------------------------
    def part_paths(self) -> list[str]:
        return [str(self.parts_dir / p) for p in self.parts]

    def _damaged(self, part: str, exc: Exception) -> IndexFormatError:
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return IndexFormatError(f"table {self.name!r}: Parquet part {self.parts_dir / part} is damaged ({msg}); "
                                "restore it from a backup or re-index")

    def read_part(self, part: str, columns: Sequence[str] | None = None) -> pa.Table:
        """A part's rows with the table's columns (columns added after it was written are null)."""
        path = self.parts_dir / part
        cols = list(columns) if columns is not None else self.schema.names
        try:
            have = pq.read_schema(path).names
            table = pq.read_table(path, columns=[c for c in cols if c in have], page_checksum_verification=True)
        except FileNotFoundError:
            raise PartGone(str(path)) from None
        except (OSError, pa.ArrowException) as exc:
            raise self._damaged(part, exc) from None
        for c in cols:
            if c not in have:
                table = table.append_column(self.schema.field(c), pa.nulls(len(table), self.schema.field(c).type))
        return table.select(cols)

    def part_rows(self, part: str) -> int:
        try:
            return pq.ParquetFile(self.parts_dir / part).metadata.num_rows
        except FileNotFoundError:
            raise PartGone(str(self.parts_dir / part)) from None
        except (OSError, pa.ArrowException) as exc:
            raise self._damaged(part, exc) from None

    def write_part(self, rows: pa.Table) -> str:
        """Write rows to a new part (not yet live: ``commit`` makes it so); returns its name."""
        name = f"part-{self.next_part:06d}-{uuid.uuid4().hex[:6]}.parquet"
        self.next_part += 1
        tmp = self.parts_dir / f".{name}.tmp"
        pq.write_table(rows, tmp, compression="zstd", write_page_checksum=True)
        os.replace(tmp, self.parts_dir / name)
        return name

    def commit(self, parts: list[str], ids: np.ndarray | None = None) -> None:
        """Make ``parts`` the live ones (a new generation; ``ids``: the ids just added), drop the others to the
        garbage and delete garbage older than the grace period."""
        now = time.time()
        dropped = [p for p in self.parts if p not in parts]
        self.parts = list(parts)
        self.generation += 1
        if ids is not None and len(ids):
            self.next_id = max(self.max_id() + 1, int(np.max(ids)) + 1)
        self.garbage = [g for g in self.garbage if g[0] not in parts] + [[p, now] for p in dropped]
        self.save()  # the commit point
        self.collect(now)

    def collect(self, now: float | None = None) -> None:
        """Delete dropped parts older than the grace period (writers only)."""
        now = time.time() if now is None else now
        old = [g for g in self.garbage if now - g[1] >= GRACE_SECONDS]
        if not old:
            return
        self.garbage = [g for g in self.garbage if now - g[1] < GRACE_SECONDS]
        self.save()
        for part, _ in old:
            (self.parts_dir / part).unlink(missing_ok=True)

    def max_id(self) -> int:
        """The largest id the table ever held (-1 when none); older states: the largest it holds."""
        if self.next_id is None:
            best = -1
            for ids in self.iter_ids(None):
                if len(ids):
                    best = max(best, int(ids.max()))
            self.next_id = best + 1
        return self.next_id - 1

    # -- reading -----------------------------------------------------------------------------------------------
    def num_rows(self) -> int:
        return sum(self.part_rows(p) for p in self.parts)

    def iter_ids(self, column: str | None) -> Iterator[np.ndarray]:
        """The ids of each part (those whose ``column`` is not null when given)."""
        for part in self.parts:
            table = self.read_part(part, ["id"] if column is None else ["id", column])
            ids = table.column(0).to_numpy().astype(np.int64)
            if column is not None and table.column(1).null_count:
                ids = ids[table.column(1).is_valid().to_numpy(zero_copy_only=False)]
            yield ids

    def ids_and_vectors(self, column: str, dim: int, batch: int = 65536, only: np.ndarray | None = None
                        ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids (m,), vectors (m, d)) of the non-null rows, part by part (``only``: just these ids; parts without
        any are skipped)."""
        for part in self.parts:
            if only is not None:
                pid = self.read_part(part, ["id"]).column(0).to_numpy()
                if not np.isin(pid, only).any():
                    continue
            table = self.read_part(part, ["id", column])
            for rb in table.to_batches(batch):
                x, valid = arrow_to_vectors(rb.column(1), dim)
                ids = rb.column(0).to_numpy()[valid].astype(np.int64)
                if only is not None:
                    sel = np.isin(ids, only)
                    ids, x = ids[sel], x[sel]
                if len(ids):
                    yield ids, x

    def sample(self, column: str, dim: int, rows: int, seed: int = 0) -> np.ndarray:
        """About ``rows`` vectors drawn uniformly (training data), streamed: (m, d)."""
        p = min(1.0, rows / max(self.num_rows(), 1))
        rng = np.random.default_rng(seed)
        out = [x[rng.random(len(x)) < p] for _, x in self.ids_and_vectors(column, dim)]
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)

    # -- compaction --------------------------------------------------------------------------------------------
    def compact(self, target_rows: int) -> int:
        """Merge the parts under a quarter of ``target_rows`` into one; returns how many were merged."""
        small = [p for p in self.parts if self.part_rows(p) < target_rows // 4]
        if len(small) <= 1:
            return 0
        merged = pa.concat_tables([self.read_part(p) for p in small])
        fresh = self.write_part(merged)
        self.commit([p for p in self.parts if p not in small] + [fresh])
        return len(small)

    def remove_leftovers(self) -> None:
        """Temporary files of a crashed write."""
        for p in self.parts_dir.glob(".*.tmp"):
            p.unlink(missing_ok=True)

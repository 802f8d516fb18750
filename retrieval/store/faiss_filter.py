"""``--where`` filters of the FAISS backend, evaluated by DuckDB over the rows of the table's Parquet parts.

The filter arrives already checked by ``retrieval.store.where``. DuckDB reads the parts itself, unless two column
names differ only in case: DuckDB folds case, so ``Label`` beside ``label`` (or a manifest's ``Width`` beside the
built-in ``width``) would be one column to it. Such a table's parts are read by pyarrow (only the columns the
filter names, plus ``id``) and handed to DuckDB under positional aliases (``c0`` is ``id``, ``c1``... the others).

Each thread queries through its own DuckDB cursor: a connection is never shared by two threads at once. Only
DuckDB's parse and bind errors (``ParserException``, ``BinderException``) are the user's filter (``InvalidFilter``);
a part that a writer removed meanwhile is :class:`PartGone` (the reader re-reads the state); anything else is an
internal error, logged and raised as ``FilterEngineError``.
"""
from __future__ import annotations

import logging
import threading
from typing import Iterator

import numpy as np
import pyarrow as pa

from retrieval.errors import InvalidFilter
from retrieval.store.faiss_parts import TableState
from retrieval.store.where import Filter
from retrieval.store.where_parse import column_kind  # the column types a filter compares
from retrieval.store.where_tree import columns

log = logging.getLogger(__name__)


def _line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _validity(col: pa.ChunkedArray) -> pa.Array:
    """A column DuckDB only tests for NULL (a vector) as booleans, null where it is: never its values."""
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    return pa.array(valid, pa.bool_(), mask=~valid)


def _aliased(state: TableState, names: list[str], alias: dict, failed: list) -> pa.RecordBatchReader:
    """The parts' columns ``names`` renamed by ``alias``, streamed; a column that only allows IS [NOT] NULL (a
    vector) as its validity. A failure to read a part (``PartGone``, damage) is appended to ``failed``."""
    nulls_only = {n for n in names if column_kind(state.schema.field(n).type) is None}
    schema = pa.schema([pa.field(alias[n], pa.bool_()) if n in nulls_only else
                        state.schema.field(n).with_name(alias[n]) for n in names])

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for part in state.parts:
                rows = state.read_part(part, names)
                cols = [_validity(rows.column(n)) if n in nulls_only else rows.column(n) for n in names]
                yield from pa.table(cols, schema=schema).to_batches()
        except Exception as exc:  # noqa: BLE001 - raised again by matching_ids
            failed.append(exc)

    return pa.RecordBatchReader.from_batches(schema, batches())


class FilterEngineError(RuntimeError):
    """DuckDB failed on a filter for a reason that is not the filter's (an internal error)."""


class DuckFilter:
    """DuckDB for the filters of one store: one connection, a cursor per thread (opened on first use)."""

    def __init__(self):
        self._con = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def _cursor(self):
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            import duckdb  # heavy optional dependency, needed only by filtered reads

            with self._lock:
                if self._con is None:
                    self._con = duckdb.connect()
                cur = self._local.cursor = self._con.cursor()
        return cur

    def matching_ids(self, state: TableState, filt: Filter) -> np.ndarray:
        """Ids (int64) of the rows of ``state``'s parts for which ``filt`` holds."""
        if not state.parts:
            return np.zeros(0, np.int64)
        failed: list[BaseException] = []   # what reading the parts raised while DuckDB consumed them
        exact = len({n.lower() for n in state.schema.names}) == len(state.schema.names)
        names = list(dict.fromkeys(["id", *columns(filt.node)]))
        alias = {} if exact else {n: f"c{i}" for i, n in enumerate(names)}
        sql = filt.sql("duckdb", alias)
        try:
            cur = self._cursor()
            if exact:   # DuckDB's own Parquet reader: parallel, with filter pushdown
                files = ", ".join("'" + p.replace("'", "''") + "'" for p in state.part_paths())
                rel = cur.sql(f"SELECT id FROM read_parquet([{files}], union_by_name=true) WHERE ({sql})")
            else:       # names that differ only in case: pyarrow reads them, DuckDB sees c0, c1, ...
                rel = cur.from_arrow(_aliased(state, names, alias, failed)).filter(sql).project('"c0"')
            ids = next(iter(rel.fetchnumpy().values()))
        except Exception as exc:  # noqa: BLE001 - sorted below: the user's filter, a part, or an internal error
            if failed:
                raise failed[0] from None
            for part in state.parts:   # a part removed meanwhile (PartGone) or damaged (IndexFormatError)
                state.part_rows(part)
            import duckdb  # already loaded by _cursor

            if isinstance(exc, (duckdb.ParserException, duckdb.BinderException)):
                raise InvalidFilter(f"bad --where expression {filt.text!r}: {_line(exc)}") from None
            log.error("internal error evaluating the filter %r as %s: %s", filt.text, sql, exc)
            raise FilterEngineError(f"internal error evaluating a filter: {_line(exc)}") from exc
        if failed:
            raise failed[0]
        return np.asarray(ids, np.int64)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
            self._local = threading.local()

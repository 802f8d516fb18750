"""``--where`` filters of the FAISS backend, evaluated by DuckDB over the table's Parquet parts.

The filter arrives already checked and rendered by ``retrieval.store.where``; whatever DuckDB still
refuses or fails on while evaluating it (a bad cast, a division by zero, an unknown column) becomes one
``InvalidFilter`` line. A part that a writer removed meanwhile is :class:`PartGone` (the reader re-reads the state).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval.errors import InvalidFilter
from retrieval.store.faiss_parts import PartGone


def _bad(where: str, exc: Exception) -> InvalidFilter:
    msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return InvalidFilter(f"bad --where expression {where!r}: {msg[:200]}")


class DuckFilter:
    """One DuckDB connection per store, opened on first use."""

    def __init__(self):
        self._con = None

    def _duck(self):
        if self._con is None:
            import duckdb  # heavy optional dependency, needed only by filtered reads

            self._con = duckdb.connect()
        return self._con

    def matching_ids(self, paths: list[str], where: str) -> np.ndarray:
        """Ids (int64) of the rows of the Parquet files ``paths`` for which ``where`` holds."""
        if not paths:
            return np.zeros(0, np.int64)
        files = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
        sql = f"SELECT id FROM read_parquet([{files}], union_by_name=true) WHERE ({where})"
        try:
            return np.asarray(self._duck().sql(sql).fetchnumpy()["id"], np.int64)
        except Exception as exc:  # noqa: BLE001 - parse, bind and run-time failures of the user's filter
            gone = [p for p in paths if not Path(p).is_file()]
            if gone:
                raise PartGone(gone[0]) from None
            raise _bad(where, exc) from None

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

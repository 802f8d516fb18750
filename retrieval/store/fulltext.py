"""Full-text engines: an index of one document string per row id, searched by BM25 over OR-ed terms.

Documents are already tokenised (``retrieval.algorithms.words.document_terms``: lower-case terms joined by
spaces), so each engine only splits on spaces and the two backends see the same terms:

- ``LanceText`` (the Lance backend): a Lance table ``(id, fp, body)`` with Lance's own inverted (FTS) index on
  ``body``; rows added since the index was built are searched too (Lance scans them), ``compact`` folds them in.
- ``SqliteText`` (the FAISS backend): SQLite's FTS5 from Python's standard library (``unicode61``, no
  diacritics removal), ``rowid`` = the row id.

Each keeps a fingerprint per row (``fp``: 63 bits of BLAKE2b of the document), so that keeping it in step with the
table only writes the rows whose document changed.
"""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

__all__ = ["LanceText", "SqliteText", "fingerprint"]

_CHUNK = 900  # ids per IN (...) list: under SQLite's 999 host parameters


def fingerprint(body: str) -> int:
    """63-bit fingerprint of a document."""
    return int.from_bytes(hashlib.blake2b(body.encode(), digest_size=8).digest(), "little") >> 1


class SqliteText:
    """FTS5 in ``path`` (one database per table)."""

    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS docs USING fts5(body, "
                        "tokenize=\"unicode61 remove_diacritics 0\")")
        self.db.execute("CREATE TABLE IF NOT EXISTS fp (id INTEGER PRIMARY KEY, fp INTEGER NOT NULL)")

    def fingerprints(self) -> dict[int, int]:
        return dict(self.db.execute("SELECT id, fp FROM fp"))

    def write(self, drop: Sequence[int], ids: Sequence[int], fps: Sequence[int], bodies: Sequence[str]) -> None:
        """Delete ``drop`` and (re)write ``ids``' documents, in one transaction."""
        cur = self.db.cursor()
        cur.execute("BEGIN")
        try:
            gone = [int(i) for i in [*drop, *ids]]
            for i in range(0, len(gone), _CHUNK):
                chunk = gone[i:i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                cur.execute(f"DELETE FROM docs WHERE rowid IN ({marks})", chunk)
                cur.execute(f"DELETE FROM fp WHERE id IN ({marks})", chunk)
            cur.executemany("INSERT INTO docs(rowid, body) VALUES (?, ?)", zip(map(int, ids), bodies))
            cur.executemany("INSERT INTO fp(id, fp) VALUES (?, ?)", zip(map(int, ids), map(int, fps)))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def search(self, terms: Sequence[str], limit: int) -> tuple[np.ndarray, np.ndarray]:
        """BM25 over ``terms`` OR-ed -> (ids (n,) int64, scores (n,) float32, higher is better), n <= limit."""
        if not terms or limit <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        expr = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        rows = self.db.execute("SELECT rowid, bm25(docs) FROM docs WHERE docs MATCH ? ORDER BY bm25(docs), rowid "
                               "LIMIT ?", (expr, int(limit))).fetchall()
        return (np.asarray([r[0] for r in rows], np.int64),
                np.asarray([-r[1] for r in rows], np.float32))  # FTS5's bm25 is negated: lower is better

    def bodies(self, ids: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        ids = [int(i) for i in ids]
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i:i + _CHUNK]
            out.update(self.db.execute(f"SELECT rowid, body FROM docs WHERE rowid IN ({','.join('?' * len(chunk))})",
                                       chunk))
        return out

    def compact(self) -> None:
        self.db.execute("INSERT INTO docs(docs) VALUES ('optimize')")
        self.db.execute("VACUUM")

    def close(self) -> None:
        self.db.close()


class LanceText:
    """A Lance table with Lance's FTS index, in its own LanceDB database folder ``path`` (one table per table)."""

    SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("fp", pa.int64()), pa.field("body", pa.string())])
    FOLD_AT = 4096  # rows written outside the index before a write folds them in

    def __init__(self, path: Path, name: str):
        import lancedb  # deferred: lancedb costs about a second to import; the FAISS backend never needs it

        self.db, self.name = lancedb.connect(str(path)), name
        self.table = self.db.create_table(name, schema=self.SCHEMA, exist_ok=True)

    def fingerprints(self) -> dict[int, int]:
        t = self.table.to_arrow().select(["id", "fp"]) if self.table.count_rows() else None
        return {} if t is None else dict(zip(t.column("id").to_pylist(), t.column("fp").to_pylist()))

    def _indexed(self) -> bool:
        return any(getattr(i, "index_type", "") == "FTS" for i in self.table.list_indices())

    def _build(self) -> None:
        from lancedb.index import FTS  # deferred with lancedb itself

        self.table.create_index("body", config=FTS(stem=False, remove_stop_words=False, ascii_folding=False,
                                                   lower_case=True, max_token_length=64), replace=True)

    def write(self, drop: Sequence[int], ids: Sequence[int], fps: Sequence[int], bodies: Sequence[str]) -> None:
        gone = [int(i) for i in [*drop, *ids]]
        for i in range(0, len(gone), 4096):
            self.table.delete(f"id IN ({','.join(map(str, gone[i:i + 4096]))})")
        if len(ids):
            self.table.add(pa.table({"id": pa.array(ids, pa.int64()), "fp": pa.array(fps, pa.int64()),
                                     "body": pa.array(bodies, pa.string())}, schema=self.SCHEMA))
        if not self._indexed():
            if self.table.count_rows():
                self._build()
        elif len(ids) >= self.FOLD_AT:
            self.table.optimize()  # folds the new rows into the FTS index

    def search(self, terms: Sequence[str], limit: int) -> tuple[np.ndarray, np.ndarray]:
        if not terms or limit <= 0 or not self.table.count_rows():
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if not self._indexed():
            self._build()
        got = (self.table.search(" ".join(terms), query_type="fts", fts_columns="body")
               .select(["id", "_score"]).limit(int(limit)).to_arrow())
        ids = np.asarray(got.column("id").to_numpy(), np.int64)
        scores = np.asarray(got.column("_score").to_numpy(), np.float32)
        order = np.lexsort((ids, -scores))  # the same order on ties as SQLite: score, then id
        return ids[order], scores[order]

    def bodies(self, ids: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        ids = [int(i) for i in ids]
        for i in range(0, len(ids), 4096):
            got = (self.table.search().where(f"id IN ({','.join(map(str, ids[i:i + 4096]))})")
                   .select(["id", "body"]).limit(None).to_arrow()) if ids[i:i + 4096] else None
            if got is not None:
                out.update(zip(got.column("id").to_pylist(), got.column("body").to_pylist()))
        return out

    def compact(self) -> None:
        if self.table.count_rows():
            if not self._indexed():
                self._build()
            self.table.optimize()

    def close(self) -> None:
        pass

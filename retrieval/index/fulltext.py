"""The full-text index of a table: the words each row carries, kept in step with the table, searched by keywords.

A row's document is made of its string columns (path, caption, label, manifest and json metadata, a text's
``text``...; not ``hash`` and the bookkeeping columns), tokenised by ``retrieval.algorithms.words``, plus for an
``images`` row the text OCR read in its picture (the ``ocr`` table, joined by content hash).

It lives in ``<index>/fulltext/``: Lance's own FTS index in a Lance table on the Lance backend, SQLite FTS5 on the
FAISS backend (``retrieval.store.fulltext``). It is derived, like the FAISS files: before a keyword query, when the
table (or its OCR rows) changed since the last look, the documents are rebuilt from the rows and compared by
fingerprint, and only rows added, removed or changed are written (under a file lock, so two processes never write
it at once). ``Index.optimize`` compacts it.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import weakref
from typing import Iterator

import numpy as np
import pyarrow as pa

from retrieval.algorithms.words import document_terms, query_terms
from retrieval.index.directory import Index
from retrieval.store.fulltext import LanceText, SqliteText, fingerprint

log = logging.getLogger(__name__)

FOLDER = "fulltext"
OCR_TABLE = "ocr"
SKIP = {"hash", "strategy", "sampling", "when", "stage", "source_table", "broken", "boxes"}
_open: "weakref.WeakKeyDictionary[Index, dict[str, FullText]]" = weakref.WeakKeyDictionary()
_opening = threading.Lock()


def text_columns(schema: pa.Schema) -> list[str]:
    """The columns whose words a row's document holds: its string columns but bookkeeping ones."""
    return [f.name for f in schema
            if (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)) and f.name not in SKIP]


def ocr_texts(index: Index) -> dict[str, str]:
    """Content hash -> the text OCR read in that picture (pictures with text only)."""
    if not index.store.has_table(OCR_TABLE):
        return {}
    out: dict[str, str] = {}
    for batch in index.store.scan(OCR_TABLE, ["hash", "text"]):
        for h, t in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            if h and t:
                out[h] = t
    return out


def documents(index: Index, table: str) -> Iterator[tuple[list[int], list[str]]]:
    """The table's rows as (ids, document strings), in blocks."""
    schema = index.store.schema(table)
    cols = text_columns(schema)
    ocr = ocr_texts(index) if table == "images" and "hash" in schema.names else {}
    read = ["id", *cols] + (["hash"] if ocr else [])
    for batch in index.store.scan(table, read):
        ids = batch.column(0).to_pylist()
        fields = [batch.column(i + 1).to_pylist() for i in range(len(cols))]
        extra = [ocr.get(h) for h in batch.column(len(read) - 1).to_pylist()] if ocr else [None] * len(ids)
        yield ids, [document_terms([*(f[r] for f in fields), extra[r]]) for r in range(len(ids))]


class FullText:
    """The full-text index of one table of an index (see the module's docstring)."""

    def __init__(self, index: Index, table: str):
        self.index, self.table = index, table
        self.folder = index.path / FOLDER
        self.folder.mkdir(exist_ok=True)
        if index.backend == "lance":
            self.engine = LanceText(self.folder / "lance", table)
        else:
            self.engine = SqliteText(self.folder / f"{table}.sqlite")
        self.state_path = self.folder / f"{table}.json"
        self.lock = threading.RLock()  # a served index answers from several threads

    def _versions(self) -> list:
        store = self.index.store
        ocr = store.version(OCR_TABLE) if self.table == "images" and store.has_table(OCR_TABLE) else None
        return [store.version(self.table), ocr, text_columns(store.schema(self.table))]

    def _state(self) -> list | None:
        try:
            return json.loads(self.state_path.read_text()).get("versions")
        except (OSError, ValueError):
            return None

    def sync(self) -> dict:
        """Bring the documents in step with the table; returns {"added", "changed", "removed"} (all 0 when the
        table did not change since the last sync)."""
        with self.lock:
            return self._sync()

    def _sync(self) -> dict:
        done = {"added": 0, "changed": 0, "removed": 0}
        versions = self._versions()
        if versions[0] is not None and self._state() == versions:
            return done
        with open(self.folder / f"{self.table}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if versions[0] is not None and self._state() == versions:  # another process did it meanwhile
                return done
            have = self.engine.fingerprints()
            seen: set[int] = set()
            ids_w: list[int] = []
            fps_w: list[int] = []
            bodies_w: list[str] = []
            for ids, bodies in documents(self.index, self.table):
                for i, body in zip(ids, bodies):
                    seen.add(i)
                    fp = fingerprint(body)
                    old = have.get(i)
                    if old != fp:
                        done["added" if old is None else "changed"] += 1
                        ids_w.append(i)
                        fps_w.append(fp)
                        bodies_w.append(body)
            drop = [i for i in have if i not in seen]
            done["removed"] = len(drop)
            if drop or ids_w:
                self.engine.write(drop, ids_w, fps_w, bodies_w)
            tmp = self.state_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"versions": versions, "rows": len(seen)}))
            os.replace(tmp, self.state_path)
        if any(done.values()):
            log.info("full-text index of %s: %s", self.table, done)
        return done

    def search(self, query: str, limit: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Keyword ranking: (ids (n,) int64, BM25 scores (n,) float32, best first, n <= limit; the query's terms)."""
        terms = query_terms(query)
        with self.lock:
            self._sync()
            ids, scores = self.engine.search(terms, limit)
        return ids, scores, terms

    def bodies(self, ids) -> dict[int, str]:
        """The indexed documents of ``ids`` (id -> terms joined by spaces)."""
        with self.lock:
            return self.engine.bodies(ids)

    def compact(self) -> dict:
        with self.lock:
            done = self._sync()
            self.engine.compact()
        return done


def full_text(index: Index, table: str) -> FullText:
    """The full-text index of ``table`` (opened once per open index)."""
    with _opening:
        per_index = _open.setdefault(index, {})
        if table not in per_index:
            per_index[table] = FullText(index, table)
        return per_index[table]


def has_full_text(index: Index, table: str) -> bool:
    """Whether ``table`` has a full-text index on disk already (it is created by the first keyword query)."""
    return (index.path / FOLDER / f"{table}.json").exists()

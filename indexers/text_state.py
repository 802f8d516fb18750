"""The text indexer's bookkeeping: what the index holds for texts, and when a file's new rows are complete.

- ``TextState``: the row generations of each source file ((mtime, bytes) -> newest id), text hashes with the id of
  a row holding that text, and the recorded errors (whole files, and single rows).
- ``repair_generations``: a source left with two generations of rows (a crash between committing a changed file's
  rows and deleting its old ones) keeps the newest.
- ``FileLedger``: rows emitted and committed per file in this run. A file that has rows committed but is not
  finished is listed in the manifest (``tables.texts.partial``) before its rows land, so an interrupted run is
  read again; once every row of a file read to its end is committed, the rows and errors it replaces are deleted
  and its mark is cleared.

Sources are file names as the file system gives them; in tables they are ``stored_path`` strings.
"""
from __future__ import annotations

import logging
from collections import Counter

import pyarrow as pa

from indexers.common import ERRORS, scan_tuples, string_literal
from retrieval.index.directory import Index
from retrieval.io.files import fs_path, stored_path

log = logging.getLogger(__name__)
TABLE = "texts"
ROW_STAGE = "row"


class TextState:
    """What the index holds for texts: row generations per source, hashes, recorded errors."""

    def __init__(self, index: Index):
        self.gens: dict[str, dict[tuple, int]] = {}          # source -> {(mtime, bytes): newest id}
        self.by_hash: dict[str, int] = {}
        self.file_errors: dict[str, tuple[int, float, int]] = {}
        self.row_errors: dict[str, list[tuple[int, float, int]]] = {}
        store = index.store
        if store.has_table(TABLE):
            rows = scan_tuples(store, TABLE, ["id", "source", "mtime", "bytes", "hash"], paths=["source"])
            for i, s, m, n, h in rows:
                g = self.gens.setdefault(s, {})
                g[(m, n)] = max(g.get((m, n), -1), i)
                if i > self.by_hash.get(h, -1):
                    self.by_hash[h] = i
        if store.has_table(ERRORS):
            for i, p, m, n, t, stage in scan_tuples(store, ERRORS, ["id", "path", "mtime", "bytes", "source_table",
                                                                    "stage"]):
                if t != TABLE:
                    continue
                if stage == ROW_STAGE:
                    self.row_errors.setdefault(p, []).append((i, m, n))
                else:
                    self.file_errors[p] = (i, m, n)

    def versions(self, source: str) -> set:
        return set(self.gens.get(source, {})) | {(m, n) for _, m, n in self.row_errors.get(source, [])}


def source_rows(store, source: str, columns: list[str]):
    """Rows (as tuples, ``columns`` after ``id``) of one source file."""
    key = stored_path(source)
    where = None if ";" in key else f"source = {string_literal(key)}"  # a filter may not hold ";": scan all
    for i, s, *rest in scan_tuples(store, TABLE, ["id", "source", *columns], where=where, paths=()):
        if s == key:
            yield (i, *rest)


def source_ids(store, source: str, below: int | None = None) -> list[int]:
    """Ids of the rows of one source (with id < below)."""
    return [i for (i,) in source_rows(store, source, []) if below is None or i < below]


def repair_generations(index: Index, state: TextState, partial: set[str]) -> None:
    """Sources with two generations of rows and no interrupted run recorded: keep the newest generation."""
    for source, gens in state.gens.items():
        if len(gens) < 2 or source in partial:
            continue
        keep = max(gens, key=gens.get)
        stale = [i for i, m, n in source_rows(index.store, source, ["mtime", "bytes"]) if (m, n) != keep]
        index.delete(TABLE, stale)
        state.gens[source] = {keep: gens[keep]}
        log.info("removed %d rows of %s left by an interrupted run", len(stale), source)


class FileLedger:
    """Per file of this run: rows emitted and committed, the first new id, whether it was read to its end; and the
    files marked partial in the manifest. Hook ``before_add`` / ``after_commit`` into the run's committer."""

    def __init__(self, index: Index, state: TextState):
        self.index, self.state = index, state
        self.partial: set[str] = {fs_path(p) for p in index.manifest["tables"][TABLE].get("partial", [])}
        self.emitted: Counter = Counter()
        self.committed: Counter = Counter()
        self.first_id: dict[str, int] = {}
        self.done_reading: set[str] = set()
        self.dirty = False
        self.replaced = 0  # old rows deleted once their file's new rows were complete

    def _marked(self) -> list[str]:
        return sorted(stored_path(p) for p in self.partial)

    def save(self) -> None:
        self.index.manifest["tables"][TABLE]["partial"] = self._marked()
        self.index.save_manifest()
        self.dirty = False

    @staticmethod
    def _sources_of(table: str, rows: pa.Table) -> list[str]:
        if table == TABLE:
            return [fs_path(s) for s in rows.column("source").to_pylist()]
        ok = [t == TABLE and s == ROW_STAGE for t, s in zip(rows.column("source_table").to_pylist(),
                                                              rows.column("stage").to_pylist())]
        return [fs_path(p) for p, k in zip(rows.column("path").to_pylist(), ok) if k]

    def before_add(self, table: str, rows: pa.Table) -> None:
        new = set(self._sources_of(table, rows)) - self.partial
        if new:  # mark before the rows land: an interrupted file is read again on the next run
            self.partial |= new
            self.save()

    def after_commit(self, table: str, rows: pa.Table) -> None:
        if table == TABLE:
            for h, i in zip(rows.column("hash").to_pylist(), rows.column("id").to_pylist()):
                self.state.by_hash[h] = i
        touched = Counter(self._sources_of(table, rows))
        self.committed.update(touched)
        for source in touched:
            self.finalize(source)
        if self.dirty:
            self.save()

    def start(self, source: str) -> None:
        self.emitted[source] = 0

    def count_row(self, source: str) -> None:
        self.emitted[source] += 1

    def new_ids(self, sources: list[str], ids) -> None:
        """Rows of ``sources`` got ``ids``: the first new id of a file separates its new rows from its old ones."""
        for source, i in zip(sources, ids):
            self.first_id.setdefault(source, int(i))

    def end_of_file(self, source: str) -> None:
        self.done_reading.add(source)
        self.finalize(source)

    def finalize(self, source: str) -> None:
        """All rows of a file read to its end are committed: drop what they replace."""
        if source not in self.done_reading or self.committed[source] != self.emitted[source]:
            return
        self.done_reading.discard(source)
        if source in self.state.gens:
            old = source_ids(self.index.store, source, self.first_id.get(source))
            self.replaced += self.index.delete(TABLE, old)
        self.drop_old_errors(source)
        if source in self.partial:
            self.partial.discard(source)
            self.dirty = True

    def abandon(self, source: str) -> bool:
        """The file failed while being read: forget its progress; returns whether it had rows emitted."""
        return self.emitted.pop(source, 0) > 0

    def drop_old_errors(self, source: str) -> None:
        ids = [i for i, _, _ in self.state.row_errors.pop(source, [])]
        if source in self.state.file_errors:
            ids.append(self.state.file_errors.pop(source)[0])
        if ids:
            self.index.delete(ERRORS, ids)

    def unmark(self, source: str) -> None:
        if source in self.partial:
            self.partial.discard(source)
            self.save()

    def close(self) -> None:
        if self.dirty or self.index.manifest["tables"][TABLE].get("partial", []) != self._marked():
            self.save()

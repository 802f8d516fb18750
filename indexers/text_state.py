"""The text indexer's bookkeeping: what the index holds for texts, and when a file's new rows are complete.

- ``TextState``: the row generations of each source file ((mtime, bytes) -> newest id), text hashes with the id of
  a row holding that text, and the recorded errors (whole files, and single rows).
- ``SourceState``: the same per source, without a row's worth of anything (no hashes, row errors as versions):
  what the Ray engine's driver plans from, its memory bounded by the sources, not the rows.
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

    def sources(self) -> set[str]:
        """Every source with rows or error rows."""
        return set(self.gens) | set(self.row_errors) | set(self.file_errors)

    def pop_error_ids(self, source: str) -> list[int]:
        """The ids of the source's error rows (file and row errors), forgotten here."""
        ids = [i for i, _, _ in self.row_errors.pop(source, [])]
        if source in self.file_errors:
            ids.append(self.file_errors.pop(source)[0])
        return ids


class SourceState(TextState):
    """``TextState`` per source only: generations ((mtime, bytes) -> newest id), the file's own error and the
    versions its row errors were recorded for; ``by_hash`` stays empty. Two streamed passes (``texts``: id, source,
    mtime, bytes; ``errors``: the texts indexer's), each batch folded per (source, mtime, bytes) before it is kept:
    memory bounded by sources x generations, never by rows. A row error's id is looked up when it is dropped."""

    def __init__(self, index: Index):  # noqa: D107 - no TextState.__init__: it would load every row's state
        self.index = index
        self.gens, self.by_hash, self.file_errors = {}, {}, {}
        self.row_errors: dict[str, set] = {}  # source -> {(mtime, bytes)}
        store = index.store
        if store.has_table(TABLE):
            for s, m, n, i in _folded(store, TABLE, ["source", "mtime", "bytes"]):
                g = self.gens.setdefault(fs_path(s), {})
                g[(m, n)] = max(g.get((m, n), -1), i)
        if store.has_table(ERRORS):
            where = f"source_table = {string_literal(TABLE)}"
            for p, m, n, stage, i in _folded(store, ERRORS, ["path", "mtime", "bytes", "stage"], where):
                if stage == ROW_STAGE:
                    self.row_errors.setdefault(fs_path(p), set()).add((m, n))
                else:
                    self.file_errors[fs_path(p)] = (i, m, n)

    def versions(self, source: str) -> set:
        return set(self.gens.get(source, {})) | self.row_errors.get(source, set())

    def pop_error_ids(self, source: str) -> list[int]:
        ids = []
        if self.row_errors.pop(source, None):
            key = stored_path(source)
            where = f"source_table = {string_literal(TABLE)} AND stage = {string_literal(ROW_STAGE)}"
            where += "" if ";" in key else f" AND path = {string_literal(key)}"  # a filter may not hold ";"
            ids = [i for i, p in scan_tuples(self.index.store, ERRORS, ["id", "path"], where=where, paths=())
                   if p == key]
        if source in self.file_errors:
            ids.append(self.file_errors.pop(source)[0])
        return ids


def _folded(store, table: str, keys: list[str], where: str | None = None):
    """(*keys, max id) per distinct ``keys`` of each scanned batch: a batch's rows never outlive it."""
    for b in store.scan(table, ["id", *keys], where=where):
        g = pa.Table.from_batches([b]).group_by(keys, use_threads=False).aggregate([("id", "max")])
        yield from zip(*(g.column(k).to_pylist() for k in keys), g.column("id_max").to_pylist())


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
        ids = self.state.pop_error_ids(source)
        if ids:
            self.index.delete(ERRORS, ids)

    def unmark(self, source: str) -> None:
        if source in self.partial:
            self.partial.discard(source)
            self.save()

    def close(self) -> None:
        if self.dirty or self.index.manifest["tables"][TABLE].get("partial", []) != self._marked():
            self.save()

"""Text sources: find text files and tables, and stream their rows without loading a corpus.

- Documents (.txt, .md): one text per file, or one per paragraph (blank-line separated) or per line (``split``).
  A document split into nothing but blank lines has no rows; a whole document that is blank is a bad row.
- Tables (.jsonl/.ndjson, .csv, .parquet): one text per row from ``text_column``; the other columns are kept as
  string metadata (renamed ``meta_<name>`` when they clash with the ``texts`` table's own columns).

``discover_texts`` only stats and sniffs: it refuses, before any index is touched, a missing source, a file of
another kind, a named file that is binary, not UTF-8 or not a regular file (a FIFO, a device), a table without
the text column, and a corpus with no text at all. A non-regular file found in a folder is never opened: it
becomes an ``errors`` row. ``read_rows`` streams one file: ``Row``s (bad rows carry an ``error``), or ``FileError``
when the whole file is unusable (binary, not UTF-8, too large to be one text).
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from retrieval.errors import InvalidInput
from retrieval.io.files import file_problem, open_regular
from retrieval.io.shard_meta import column_name
from retrieval.io.sources import resolve_sources

DOC_EXTENSIONS = (".txt", ".md")
TABLE_EXTENSIONS = (".jsonl", ".ndjson", ".csv", ".parquet")
SPLITS = ("none", "paragraphs", "lines")
RESERVED = ("id", "source", "chunk", "text", "n_tokens", "n_chunks", "strategy", "hash", "mtime", "bytes", "vector")
SNIFF_BYTES = 64 << 10
PARQUET_BATCH = 1024


class FileError(Exception):
    """A whole file cannot be used; ``stage`` is read or decode."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage, self.reason = stage, reason


@dataclass
class TextFile:
    path: str
    bytes: int
    mtime: float
    kind: str  # doc | jsonl | csv | parquet
    problem: str | None = None  # why it cannot be read at all (not a regular file), found by stat


@dataclass
class Row:
    chunk: int                 # paragraph / line / row number within the file, from 0
    text: str | None
    meta: dict = field(default_factory=dict)
    error: str | None = None   # why the row cannot be embedded


@dataclass
class TextDiscovery:
    files: list[TextFile]
    roots: list[str]


def _kind(path: str) -> str | None:
    s = path.lower()
    if s.endswith(DOC_EXTENSIONS):
        return "doc"
    for ext, kind in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".csv", "csv"), (".parquet", "parquet")):
        if s.endswith(ext):
            return kind
    return None


def meta_name(name: str) -> str | None:
    """The column a metadata field is stored in: ``meta_<name>`` when it clashes with the table's own columns,
    characters a store cannot take in a field name made ``_`` (``a.b`` -> ``a_b``, as for shard and manifest
    metadata); None when it still cannot be a column (empty, starting with ``_``, too long): the field is left out."""
    return column_name(f"meta_{name}" if name in RESERVED else str(name))[0]


def meta_value(v) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (dict, list)) else str(v)


# -- sniffing ------------------------------------------------------------------------------------------------------
def sniff_text(head: bytes) -> str | None:
    """Why the first bytes of a file are not UTF-8 text, or None. A multi-byte character cut at the end is fine."""
    if b"\x00" in head:
        return "binary file (NUL bytes), not text"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.start >= len(head) - 3:
            return None
        return f"not UTF-8 text (invalid byte at offset {exc.start})"
    return None


def _head(path: str, n: int = SNIFF_BYTES) -> bytes:
    with open_regular(path) as f:
        return f.read(n)


def _parquet_text_type(fh, column: str):
    """(ParquetFile, type of ``column`` or None) of an open file (opened by us: pyarrow cannot open a file name
    that is not UTF-8)."""
    try:
        pf = pq.ParquetFile(fh)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FileError("decode", f"not a Parquet file ({str(exc).splitlines()[0][:120]})") from exc
    schema = pf.schema_arrow
    if column not in schema.names:
        return pf, None
    return pf, schema.field(column).type


def check_table(path: str, kind: str, column: str, named: bool = True) -> bool:
    """Raise ``InvalidInput`` when a table has no ``column`` (or a non-string one); return whether it has rows.
    An unreadable table found in a folder (``named`` False) is left for the indexer to record as an error."""
    if kind == "parquet":
        with open_regular(path) as fh:
            try:
                pf, typ = _parquet_text_type(fh, column)
            except FileError as exc:
                if not named:
                    return False
                raise InvalidInput(f"{path}: {exc.reason}") from None
            if typ is None:
                raise InvalidInput(f"{path} has no {column!r} column (columns: {', '.join(pf.schema_arrow.names)}); "
                                   "choose one with --text-column")
            if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ)):
                raise InvalidInput(f"{path}: column {column!r} holds {typ}, not text; choose one with --text-column")
            return pf.metadata.num_rows > 0
    head = _head(path)
    why = sniff_text(head)
    if why and not named:
        return False
    if why:
        raise InvalidInput(f"{path}: {why}")
    text = head.decode("utf-8", "ignore")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if kind == "csv":
        if not lines:
            return False
        header = next(csv.reader([lines[0]]))
        if column not in header:
            raise InvalidInput(f"{path} has no {column!r} column (columns: {', '.join(header)}); "
                               "choose one with --text-column")
        return len(lines) > 1
    keys: list[str] = []
    for ln in lines[:200]:
        try:
            obj = json.loads(ln)
        except ValueError:
            continue
        if isinstance(obj, dict):
            if column in obj:
                return True
            keys += [k for k in obj if k not in keys]
    if lines and (keys or len(head) < SNIFF_BYTES):
        raise InvalidInput(f"{path} has no {column!r} field in its first rows (fields: {', '.join(keys) or 'none'}); "
                           "choose one with --text-column")
    return bool(lines)


def _doc_has_text(path: str) -> bool:
    with open_regular(path) as f:
        while block := f.read(SNIFF_BYTES):
            if block.strip():
                return True
    return False


def discover_texts(sources: Sequence[str | Path], text_column: str = "text",
                   exclude: Sequence[str] = ()) -> TextDiscovery:
    """Find the text files and tables of every source; ``InvalidInput`` for anything that cannot be indexed at all."""
    files: dict[str, TextFile] = {}
    roots: list[str] = []
    named: set[str] = set()
    refuse = "{src} is not a text file (.txt, .md), a table (.jsonl, .csv, .parquet) or a folder"
    for source in resolve_sources(sources, DOC_EXTENSIONS + TABLE_EXTENSIONS, refuse, exclude,
                                  accept=lambda q: _kind(str(q)) is not None):
        roots.append(str(source.path))
        if not source.path.is_dir():
            named.add(str(source.path))
        for path in source.files:
            if path not in files:
                st = os.stat(path)
                files[path] = TextFile(path, st.st_size, st.st_mtime, _kind(path), file_problem(st))
                if files[path].problem and path in named:
                    raise InvalidInput(f"{path}: {files[path].problem}")
    if not files:
        raise InvalidInput(f"no text files in {', '.join(map(str, sources))} "
                           f"(looked for {', '.join(e.lstrip('.') for e in DOC_EXTENSIONS + TABLE_EXTENSIONS)})")
    any_text = False
    for f in files.values():
        if f.problem:  # never opened; recorded as an error by the indexer
            continue
        if f.kind != "doc":
            any_text |= check_table(f.path, f.kind, text_column, f.path in named)
            continue
        if f.path in named:
            why = sniff_text(_head(f.path))
            if why:
                raise InvalidInput(f"{f.path}: {why}")
        any_text = any_text or (f.bytes > 0 and _doc_has_text(f.path))
    if not any_text:
        raise InvalidInput(f"no text to index in {', '.join(map(str, sources))}: every file is empty")
    return TextDiscovery(sorted(files.values(), key=lambda f: f.path), roots)


# -- reading -------------------------------------------------------------------------------------------------------
def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _check_text(text, column: str) -> str | None:
    if text is None:
        return f"{column} is null"
    if not isinstance(text, str):
        return f"{column} is a {type(text).__name__}, not a string"
    if not text.strip():
        return f"{column} is empty"
    return None


def _read_doc(path: str, split: str, max_bytes: int) -> Iterator[Row]:
    why = sniff_text(_head(path))
    if why:
        raise FileError("decode", why)
    if split == "none":
        size = os.path.getsize(path)
        if size > max_bytes:
            raise FileError("read", f"{size >> 20} MiB is too large for one text; use --split paragraphs or lines")
        with open_regular(path) as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise FileError("decode", f"not UTF-8 text (invalid byte at offset {exc.start})") from None
        yield Row(0, text.strip(), error=None if text.strip() else "document is empty")
        return
    with open_regular(path) as f:
        if split == "lines":
            for i, raw in enumerate(f):
                text = _decode(raw.removeprefix(b"\xef\xbb\xbf") if i == 0 else raw)
                if text is None:
                    yield Row(i, None, error="invalid UTF-8")
                elif text.strip():
                    yield Row(i, text.strip())
            return
        para: list[bytes] = []
        n = 0
        for raw in itertools.chain(f, [b""]):
            if raw.strip():
                para.append(raw)
                continue
            if para:
                text = _decode(b"".join(para).removeprefix(b"\xef\xbb\xbf"))
                yield Row(n, text.strip() if text else None, error=None if text else "invalid UTF-8")
                n += 1
                para = []


def _read_jsonl(path: str, column: str) -> Iterator[Row]:
    with open_regular(path) as f:
        for i, raw in enumerate(f):
            if not raw.strip():
                continue
            line = _decode(raw)
            if line is None:
                yield Row(i, None, error="invalid UTF-8")
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                yield Row(i, None, error=f"invalid JSON ({exc.msg})")
                continue
            if not isinstance(obj, dict):
                yield Row(i, None, error=f"not a JSON object but a {type(obj).__name__}")
                continue
            if column not in obj:
                yield Row(i, None, error=f"no {column!r} field")
                continue
            text = obj.pop(column)
            meta = {n: meta_value(v) for k, v in obj.items() if (n := meta_name(k))}
            yield Row(i, text, meta, _check_text(text, column))


def _read_csv(path: str, column: str) -> Iterator[Row]:
    csv.field_size_limit(1 << 30)
    with open_regular(path) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        col = header.index(column)
        names = [meta_name(h) for h in header]
        for i, rec in enumerate(reader):
            if not rec:
                continue
            if len(rec) <= col:
                yield Row(i, None, error=f"row has {len(rec)} fields, the header {len(header)}")
                continue
            if any("\udc80" <= ch <= "\udcff" for v in rec for ch in v):
                yield Row(i, None, error="invalid UTF-8")
                continue
            meta = {names[j]: (v if v != "" else None) for j, v in enumerate(rec[:len(header)])
                    if j != col and names[j]}
            yield Row(i, rec[col], meta, _check_text(rec[col], column))


def _read_parquet(path: str, column: str) -> Iterator[Row]:
    with open_regular(path) as fh:
        pf, typ = _parquet_text_type(fh, column)
        if typ is None:
            raise FileError("read", f"no {column!r} column")
        i = 0
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH):
            data = batch.to_pydict()
            texts = data.pop(column)
            names = {k: meta_name(k) for k in data}
            for r, text in enumerate(texts):
                meta = {names[k]: meta_value(v[r]) for k, v in data.items() if names[k]}
                yield Row(i, text, meta, _check_text(text, column))
                i += 1


def read_rows(f: TextFile, text_column: str = "text", split: str = "none", max_bytes: int = 32 << 20) -> Iterator[Row]:
    """Stream the rows of one file; ``FileError`` when the file as a whole is unusable."""
    if f.problem:
        raise FileError("read", f.problem)
    try:
        if f.kind in ("jsonl", "csv") and b"\x00" in _head(f.path):
            raise FileError("decode", "binary file (NUL bytes), not text")
        if f.kind == "doc":
            yield from _read_doc(f.path, split, max_bytes)
        elif f.kind == "jsonl":
            yield from _read_jsonl(f.path, text_column)
        elif f.kind == "csv":
            yield from _read_csv(f.path, text_column)
        else:
            yield from _read_parquet(f.path, text_column)
    except FileError:
        raise
    except ValueError as exc:  # a CSV header without the column, a malformed CSV
        raise FileError("decode", str(exc).splitlines()[0][:200]) from exc
    except OSError as exc:
        raise FileError("read", f"unreadable: {exc.strerror or exc}") from exc

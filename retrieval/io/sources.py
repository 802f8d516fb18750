"""Sources: find the files an indexer should read, from folders or from manifests (CSV, Parquet, JSONL).

A folder source is walked recursively; hidden files and folders (a leading dot), and folders matching an
``exclude`` glob, are skipped. A manifest lists files in a ``path`` column (relative paths are taken relative to
the manifest) with optional ``caption``, ``label`` and any other columns, which are kept as metadata.
Everything here only stats files: nothing is opened or decoded. A path that is not a regular file (a FIFO, a
device) is kept as an item with a ``problem``, which the indexers record in ``errors`` without opening it.
"""
from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from retrieval.errors import InvalidInput
from retrieval.io.files import file_problem
from retrieval.io.shard_meta import column_name

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
MANIFEST_EXTENSIONS = (".csv", ".parquet", ".jsonl", ".ndjson")


@dataclass
class Item:
    """One file to index: absolute path, size and mtime (None when missing), plus manifest fields."""

    path: str
    bytes: int | None
    mtime: float | None
    caption: str | None = None
    label: str | None = None
    meta: dict = field(default_factory=dict)
    problem: str | None = None  # why it cannot be read at all (not a regular file), found by stat


@dataclass
class Discovery:
    """What the sources hold: items (sorted by path), the roots they cover (for pruning) and extra column names."""

    items: list[Item]
    roots: list[str]
    meta_columns: list[str]


def stat_item(path: str, **fields) -> Item:
    """An item for ``path`` with its size and mtime (None when missing) and, for a non-regular file, its problem."""
    try:
        st = os.stat(path)
    except OSError:
        return Item(path, None, None, **fields)
    return Item(path, st.st_size, st.st_mtime, problem=file_problem(st), **fields)


def read_manifest(path: Path) -> list[dict]:
    """Rows of a CSV / Parquet / JSONL manifest as dicts (strings kept as strings)."""
    suffix = path.suffix.lower()
    try:
        problem = file_problem(os.stat(path))
        if problem:
            raise InvalidInput(f"cannot read manifest {path}: {problem}")
        if suffix == ".parquet":
            table = pq.read_table(path)
        elif suffix == ".csv":
            table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
        else:
            table = pjson.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"cannot read manifest {path}: {str(exc).splitlines()[0][:200]}") from exc
    if "path" not in table.column_names:
        raise InvalidInput(f"manifest {path} has no 'path' column (columns: {', '.join(table.column_names)})")
    return table.to_pylist()


def manifest_columns(keys: Sequence[str], path: Path) -> dict[str, str | None]:
    """A manifest's metadata columns -> the names they are stored under (None: left out), by the rule shard
    metadata follows (``shard_meta.column_name``): characters a store cannot take in a field name (``.``, a
    backquote, a space...) become ``_``; a name that still cannot be a column, or that repeats an earlier one, is
    left out. Each rename and each column left out is logged once per manifest."""
    out: dict[str, str | None] = {}
    taken: dict[str, str] = {}
    for key in keys:
        if key in ("path", "caption", "label"):
            continue
        name, why = column_name(str(key))
        if name is not None and name in taken:
            name, why = None, f"it would be stored as {taken[name]!r}'s column"
        if name is None:
            log.warning("%s: column %r is left out: %s", path, key, why)
        elif name != key:
            log.warning("%s: column %r is stored as %r (a column name holds letters, digits and _)", path, key, name)
        out[key] = name
        if name is not None:
            taken[name] = key
    return out


def _walk(root: Path, extensions: Sequence[str], exclude: Sequence[str]) -> Iterable[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not any(fnmatch.fnmatch(d, pat) for pat in exclude)
                             and not os.path.isfile(os.path.join(dirpath, d, "clipdex.json")))
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(extensions):
                continue
            if any(fnmatch.fnmatch(name, pat) for pat in exclude):
                continue
            yield os.path.join(dirpath, name)


@dataclass
class Source:
    """One source as given, made absolute, and the files it names: a folder's (walked, sorted) or the file."""

    given: str
    path: Path
    files: list[str]


def resolve_sources(sources: Sequence[str | Path], extensions: Sequence[str], refuse: str,
                    exclude: Sequence[str] = (), recursive: bool = True,
                    accept: Callable[[Path], bool] | None = None) -> Iterator[Source]:
    """The one way every indexer resolves its sources (images and manifests, shards, text corpora): each source
    checked to exist and made absolute; a folder yields its files with ``extensions`` (walked recursively, hidden
    and ``exclude``-matching names skipped; with ``recursive=False`` its own files only); a file yields itself when
    ``accept(path)`` (default: its suffix is one of ``extensions``). ``InvalidInput`` for no source at all, a
    missing source, or a file of another kind (``refuse`` with ``{src}`` replaced by the source as given)."""
    if not sources:
        raise InvalidInput("no source given")
    exts = tuple(e.lower() for e in extensions)
    for src in sources:
        path = Path(src).expanduser()
        if not path.exists():
            raise InvalidInput(f"source not found: {src}")
        path = path.resolve()
        if path.is_dir():
            files = (list(_walk(path, exts, exclude)) if recursive else
                     sorted(str(q) for q in path.iterdir() if q.suffix.lower() in exts and q.is_file()))
        elif accept(path) if accept is not None else path.suffix.lower() in exts:
            files = [str(path)]
        else:
            raise InvalidInput(refuse.format(src=src))
        yield Source(str(src), path, files)


def discover(sources: Sequence[str | Path], extensions: Sequence[str] = IMAGE_EXTENSIONS,
             exclude: Sequence[str] = ()) -> Discovery:
    """Find the files of every source. Raises ``InvalidInput`` for a missing source or when nothing is found."""
    items: dict[str, Item] = {}
    roots: list[str] = []
    meta_columns: list[str] = []
    kinds = "/".join(e.lstrip(".") for e in extensions)
    refuse = f"{{src}} is neither a folder, a manifest (csv/parquet/jsonl) nor a {kinds} file"
    wanted = tuple(e.lower() for e in (*extensions, *MANIFEST_EXTENSIONS))
    for source in resolve_sources(sources, extensions, refuse, exclude, accept=lambda q: q.suffix.lower() in wanted):
        src_path = source.path
        if src_path.is_dir():
            roots.append(str(src_path))
            for p in source.files:
                if p not in items:
                    items[p] = stat_item(p)
        elif src_path.suffix.lower() in MANIFEST_EXTENSIONS:
            roots.append(str(src_path.parent))
            rows = read_manifest(src_path)
            names = manifest_columns(list(rows[0]) if rows else [], src_path)
            for row in rows:
                raw = row.pop("path")
                if not raw:
                    continue
                p = str((src_path.parent / str(raw)).resolve())
                if p in items:
                    continue
                caption, label = row.pop("caption", None), row.pop("label", None)
                meta = {names[k]: (None if v is None else str(v)) for k, v in row.items() if names.get(k)}
                for k in meta:
                    if k not in meta_columns:
                        meta_columns.append(k)
                items[p] = stat_item(p, caption=None if caption is None else str(caption),
                                     label=None if label is None else str(label), meta=meta)
        else:
            roots.append(str(src_path))
            items[str(src_path)] = stat_item(str(src_path))
    if not items:
        raise InvalidInput(f"no files to index in {', '.join(map(str, sources))} "
                           f"(looked for {', '.join(e.lstrip('.') for e in extensions)})")
    return Discovery(sorted(items.values(), key=lambda it: it.path), roots, meta_columns)


def under_roots(path: str, roots: Sequence[str]) -> bool:
    """True when ``path`` is one of ``roots`` or inside one of them."""
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)

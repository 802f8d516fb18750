"""Webdataset tar shards and img2dataset output folders as a source (torch-free, shared by both engines).

**Finding shards.** ``discover_shards`` takes ``.tar`` files, brace patterns (``shards/{00000..00099}.tar``,
``{a,b}``; ``retrieval.io.braces``: at most ``MAX_NAMES`` names in one discovery, expanded one at a time) and
folders holding ``.tar`` files (an img2dataset output folder: ``00000.tar`` with ``00000.parquet`` beside it). Only
``stat`` is called; a shard a pattern names but that is missing is kept with ``bytes=None`` so the indexer records
it, but a pattern none of whose names exists is refused.

**Reading one.** ``read_shard`` streams a tar once, front to back, and groups consecutive members by webdataset's
key rule: the member path up to the first dot of its file name (``a/b/0001.jpg`` -> key ``a/b/0001``, extension
``jpg``). The image is the ``jpg``/``jpeg``/``png``/``webp`` member, the caption the ``txt`` member, metadata the
``json`` member, flattened into string columns (``retrieval.io.shard_meta``: bounded parsing, names every store
takes). img2dataset's per-shard parquet (``key``, ``status``, ``error_message``, ``url``, ``caption``, sizes,
``sha256``) is joined by key: its failed downloads, which are not in the tar, come back as samples with a
``problem``. A broken tar (truncated, not a tar at all) raises ``ShardError`` after the samples read before the
damage have been yielded.

**One sample per key.** The first sample of a key, in tar order, is the sample (what a webdataset reader
yields first); a later group of members with the same key, or a member repeating an extension of the current
group (``k.jpg k.txt k.jpg``: a second sample of ``k``), is a duplicate: it comes back with ``copy`` > 1 and a
``problem``, unread, so its row is never written and its caption never mixed into the first one's.
"""
from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from retrieval.errors import InvalidInput
from retrieval.io.braces import GROUP, MAX_NAMES, count_braces, iter_braces
from retrieval.io.shard_meta import MAX_JSON_BYTES, MetadataError, flatten, parse_json, safe_columns
from retrieval.io.sources import resolve_sources

T = TypeVar("T")
SHARD_EXTENSIONS = (".tar",)
IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")
# img2dataset parquet columns that are not kept as metadata (the row's own columns or the join's bookkeeping)
_PARQUET_SKIP = frozenset({"key", "status", "error_message", "caption", "width", "height"})


@dataclass(slots=True)
class Shard:
    """One tar shard: absolute path, size and mtime (None when missing), and its img2dataset parquet if any."""

    path: str
    bytes: int | None
    mtime: float | None
    parquet: str | None = None


@dataclass
class ShardDiscovery:
    """The shards of the sources, sorted by path, and the roots they cover."""

    shards: list[Shard]
    roots: list[str]


@dataclass
class ShardSample:
    """One sample of a shard: its key, the image member's bytes, caption and flattened metadata; ``problem``
    (with ``stage``) says why it cannot be indexed (a failed download, no image member, a json that does not
    parse, a duplicate key); ``copy``: 1 for the first sample of its key, n for its n-th duplicate; ``dropped``:
    the metadata keys not kept as columns, with why (``shard_meta.safe_columns``)."""

    key: str
    image: bytes | None = None
    caption: str | None = None
    meta: dict = field(default_factory=dict)
    problem: str | None = None
    stage: str = "read"
    copy: int = 1
    dropped: list[tuple[str, str]] = field(default_factory=list)


class ShardError(Exception):
    """The tar itself is broken (truncated, not a tar); ``samples`` were read before the damage."""

    def __init__(self, reason: str, samples: int):
        super().__init__(reason)
        self.reason = reason
        self.samples = samples


def sample_path(shard: str, key: str, copy: int = 1) -> str:
    """A sample's identity as stored in ``path``: the shard's path and the key, joined by ``#``; a duplicate's
    (``copy`` n > 1) ends in ``.dupN``, which no key can (a key has no dot after its last ``/``)."""
    return f"{shard}#{key}" if copy == 1 else f"{shard}#{key}.dup{copy}"


def metadata_path(sample: str) -> str:
    """Where an indexed sample's metadata keys that were not kept are recorded: its path + ``.json`` (its json
    member's name)."""
    return sample + ".json"


def _is_pattern(src: str) -> bool:
    return bool(GROUP.search(src)) and not Path(src).expanduser().exists()


def is_shard_source(src: str | Path) -> bool:
    """True for a brace pattern, a ``.tar`` file or a folder holding ``.tar`` files (img2dataset output)."""
    s = str(src)
    p = Path(s).expanduser()
    if _is_pattern(s):  # a folder really named "x {1}" is a folder, not a pattern
        return True
    if p.suffix.lower() in SHARD_EXTENSIONS:
        return True
    return p.is_dir() and any(q.suffix.lower() in SHARD_EXTENSIONS and q.is_file() for q in p.iterdir())


def _shard(path: str) -> Shard:
    try:
        st = os.stat(path)
    except OSError:
        return Shard(path, None, None)
    parquet = os.path.splitext(path)[0] + ".parquet"
    return Shard(path, st.st_size, st.st_mtime, parquet if os.path.isfile(parquet) else None)


def discover_shards(sources: Sequence[str | Path]) -> ShardDiscovery:
    """The shards named by ``sources`` (tar files, brace patterns, folders of tars). ``InvalidInput`` when a
    source is neither, names no shard at all (a pattern: none of its names exists), or the patterns name more than
    ``MAX_NAMES`` files together (counted before any name is made); a file a pattern names but that is missing is
    kept (bytes None)."""
    patterns = [str(s) for s in sources if _is_pattern(str(s))]
    total = sum(count_braces(s) for s in patterns)
    if total > MAX_NAMES:
        raise InvalidInput(f"{', '.join(patterns)} name{'s' if len(patterns) == 1 else ''} {total:,} shards; at most "
                           f"{MAX_NAMES:,} in one run (check the range, or index the shards in several runs)")
    shards: dict[str, Shard] = {}
    roots: list[str] = []
    for src in patterns:
        if not _pattern_shards(src, shards):
            raise InvalidInput(f"no shard named by {src} exists ({count_braces(src):,} names looked for)")
        roots.append(str(Path(src).expanduser().absolute()))
    others = [s for s in sources if str(s) not in patterns]
    refuse = "{src} is neither a .tar shard, a brace pattern nor a folder of shards"
    resolved = resolve_sources(others, SHARD_EXTENSIONS, refuse, recursive=False) if others or not patterns else ()
    for source in resolved:  # (no source at all is resolve_sources' "no source given")
        roots.append(str(source.path))
        for path in source.files:
            shards.setdefault(path, _shard(path))
    if not shards:
        raise InvalidInput(f"no shards in {', '.join(map(str, sources))}")
    return ShardDiscovery(sorted(shards.values(), key=lambda sh: sh.path), roots)


def _pattern_shards(pattern: str, shards: dict[str, Shard]) -> int:
    """Add the shards ``pattern`` names to ``shards`` (each name made and looked up in turn: stat-ed, unless its
    folder is not there); returns how many exist."""
    found = 0
    folders: dict[str, bool] = {}
    for name in iter_braces(str(Path(pattern).expanduser().absolute())):
        if "/." in name or "//" in name:
            name = str(Path(name))  # the spelling Path gives (no "." parts, no doubled slashes)
        if name in shards:
            continue
        folder = os.path.dirname(name)
        if folder not in folders:
            folders[folder] = os.path.isdir(folder)
        sh = shards[name] = _shard(name) if folders[folder] else Shard(name, None, None)
        found += sh.bytes is not None
    return found


def split_key(name: str) -> tuple[str, str]:
    """webdataset's key rule: ``dir/0001.seg.jpg`` -> (``dir/0001``, ``seg.jpg``)."""
    folder, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def read_downloads(parquet: str | None) -> dict[str, dict]:
    """img2dataset's per-shard parquet: key -> its row, the first one of a key (``{}`` without one). ``ShardError``
    if unreadable."""
    if not parquet:
        return {}
    try:
        table = pq.read_table(parquet)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ShardError(f"img2dataset parquet {parquet} unreadable: {str(exc).splitlines()[0][:200]}", 0) from exc
    if "key" not in table.column_names:
        return {}
    out: dict[str, dict] = {}
    for r in table.to_pylist():
        out.setdefault(str(r["key"]), r)
    return out


def _download_meta(row: dict) -> tuple[dict, list[tuple[str, str]]]:
    return safe_columns(((str(k), None if v is None else str(v)) for k, v in row.items()), _PARQUET_SKIP)


def _sample(key: str, members: dict[str, bytes | int], download: dict | None) -> ShardSample:
    sample = ShardSample(key, image=image_member(members))
    if "txt" in members:
        sample.caption = members["txt"].decode("utf-8", "replace")
    if download:
        sample.meta, sample.dropped = _download_meta(download)
        if sample.caption is None and download.get("caption") is not None:
            sample.caption = str(download["caption"])
    if "json" in members:
        data = members["json"]
        try:
            if isinstance(data, int):
                raise MetadataError(f"is {data:,} bytes, over the limit of {MAX_JSON_BYTES:,}")
            meta, dropped = safe_columns(flatten(parse_json(data)), _PARQUET_SKIP)
        except MetadataError as exc:
            sample.problem = f"metadata json {exc}"
            return sample
        sample.meta.update(meta)  # the json's value of a column wins over the parquet's, as before
        sample.dropped += dropped
    if sample.image is None:
        found = ", ".join(sorted(members)) or "nothing"
        sample.problem = f"no image member ({'/'.join(IMAGE_MEMBERS)}) in the sample, found {found}"
    return sample


def image_member(members: dict[str, T]) -> T | None:
    """A sample's image among its members by extension: the first of ``IMAGE_MEMBERS`` it has, or None."""
    return next((members[e] for e in IMAGE_MEMBERS if e in members), None)


def group_samples(tar: tarfile.TarFile,
                  read: Callable[[tarfile.TarInfo, str], T]) -> Iterator[tuple[str, dict[str, T]]]:
    """A tar's file members grouped into samples by webdataset's key rule, in tar order: (key, {extension: what
    ``read`` makes of the member}). ``read`` is called as each member is reached (a streamed tar's data can only be
    read then). A sample ends where the key changes or an extension repeats (``k.jpg k.txt k.jpg``: a second sample
    of ``k``)."""
    key, members = None, {}
    for member in tar:
        if not member.isfile():
            continue
        k, ext = split_key(member.name)
        if key is not None and (k != key or ext in members):  # a new sample (perhaps of the same key)
            yield key, members
            members = {}
        key = k
        members[ext] = read(member, ext)
    if key is not None:
        yield key, members


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, ext: str) -> bytes | int:
    """A member's bytes; a json member over ``MAX_JSON_BYTES`` is left unread: its size instead."""
    if ext == "json" and member.size > MAX_JSON_BYTES:
        return member.size
    return tar.extractfile(member).read()


class _Keys:
    """Which keys a shard has had so far: the first sample of a key is read, later ones are duplicates."""

    def __init__(self, downloads: dict[str, dict]):
        self.copies: dict[str, int] = {}
        self.downloads = downloads

    def sample(self, key: str, members: dict[str, bytes | int]) -> ShardSample:
        copy = self.copies[key] = self.copies.get(key, 0) + 1
        if copy == 1:
            return _sample(key, members, self.downloads.get(key))
        return ShardSample(key, copy=copy, problem=f"duplicate key {key!r}: sample {copy} with this key in the "
                           f"shard (members {', '.join(sorted(members))}); only the first one is read")


def read_shard(shard: Shard) -> Iterator[ShardSample]:
    """The samples of one shard in tar order (a duplicate key's later samples with ``copy`` > 1 and a problem),
    then its img2dataset failed downloads (problem set, stage "download"). Raises ``ShardError`` when the tar is
    broken, after yielding the samples before the damage."""
    keys = _Keys(read_downloads(shard.parquet))
    n = 0
    try:
        with open(shard.path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for key, members in group_samples(tar, lambda member, ext: _read_member(tar, member, ext)):
                n += 1
                yield keys.sample(key, members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ShardError(f"broken tar after {n} samples: {type(exc).__name__}: {str(exc)[:160]}", n) from exc
    for key, row in keys.downloads.items():
        if key in keys.copies:
            continue
        status = row.get("status")
        reason = row.get("error_message") or ("missing from the tar" if status == "success" else f"status {status}")
        yield ShardSample(key, meta=_download_meta(row)[0], problem=f"download failed: {reason}", stage="download")

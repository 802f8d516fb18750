"""Webdataset tar shards and img2dataset output folders as a source (torch-free, shared by both engines).

**Finding shards.** ``discover_shards`` takes ``.tar`` files, brace patterns (``shards/{00000..00099}.tar``,
``{a,b}``) and folders holding ``.tar`` files (an img2dataset output folder: ``00000.tar`` with ``00000.parquet``
beside it). Only ``stat`` is called; a shard a pattern names but that is missing is kept with ``bytes=None`` so
the indexer records it.

**Reading one.** ``read_shard`` streams a tar once, front to back, and groups consecutive members by webdataset's
key rule: the member path up to the first dot of its file name (``a/b/0001.jpg`` -> key ``a/b/0001``, extension
``jpg``). The image is the ``jpg``/``jpeg``/``png``/``webp`` member, the caption the ``txt`` member, metadata the
``json`` member, flattened into string columns (``{"a": {"b": 1}}`` -> ``a_b = "1"``). img2dataset's per-shard
parquet (``key``, ``status``, ``error_message``, ``url``, ``caption``, sizes, ``sha256``) is joined by key: its
failed downloads, which are not in the tar, come back as samples with a ``problem``. A broken tar (truncated,
not a tar at all) raises ``ShardError`` after the samples read before the damage have been yielded.
"""
from __future__ import annotations

import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from retrieval.errors import InvalidInput

SHARD_EXTENSIONS = (".tar",)
IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")
# img2dataset parquet columns that are not kept as metadata (the row's own columns or the join's bookkeeping)
_PARQUET_SKIP = {"key", "status", "error_message", "caption", "width", "height"}
_BRACE = re.compile(r"\{([^{}]*)\}")


@dataclass
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
    parse)."""

    key: str
    image: bytes | None = None
    caption: str | None = None
    meta: dict = field(default_factory=dict)
    problem: str | None = None
    stage: str = "read"


class ShardError(Exception):
    """The tar itself is broken (truncated, not a tar); ``samples`` were read before the damage."""

    def __init__(self, reason: str, samples: int):
        super().__init__(reason)
        self.reason = reason
        self.samples = samples


def sample_path(shard: str, key: str) -> str:
    """A sample's identity as stored in ``path``: the shard's path and the key, joined by ``#``."""
    return f"{shard}#{key}"


def expand_braces(pattern: str) -> list[str]:
    """``a/{000..002}.tar`` -> ``a/000.tar a/001.tar a/002.tar`` (numeric ranges keep the zero padding);
    ``{x,y}`` lists alternatives; several groups multiply. Raises ``InvalidInput`` on a malformed range."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    head, tail, body = pattern[:m.start()], pattern[m.end():], m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = int(rng.group(1)), int(rng.group(2))
        if hi < lo:
            raise InvalidInput(f"brace range {{{body}}} in {pattern} counts down")
        width = len(rng.group(1)) if rng.group(1).startswith("0") else 0
        options = [str(i).zfill(width) for i in range(lo, hi + 1)]
    elif "," in body:
        options = body.split(",")
    else:
        raise InvalidInput(f"cannot expand {{{body}}} in {pattern}: use {{000..099}} or {{a,b}}")
    return [p for opt in options for p in expand_braces(head + opt + tail)]


def is_shard_source(src: str | Path) -> bool:
    """True for a brace pattern, a ``.tar`` file or a folder holding ``.tar`` files (img2dataset output)."""
    s = str(src)
    p = Path(s).expanduser()
    if _BRACE.search(s) and not p.exists():  # a folder really named "x {1}" is a folder, not a pattern
        return True
    if p.suffix.lower() in SHARD_EXTENSIONS:
        return True
    return p.is_dir() and any(q.suffix.lower() in SHARD_EXTENSIONS and q.is_file() for q in p.iterdir())


def _shard(path: Path) -> Shard:
    parquet = path.with_suffix(".parquet")
    try:
        st = os.stat(path)
    except OSError:
        return Shard(str(path), None, None)
    return Shard(str(path), st.st_size, st.st_mtime, str(parquet) if parquet.is_file() else None)


def discover_shards(sources: Sequence[str | Path]) -> ShardDiscovery:
    """The shards named by ``sources`` (tar files, brace patterns, folders of tars). ``InvalidInput`` when a
    source is neither, or names no shard at all; a file a pattern names but that is missing is kept (bytes None)."""
    shards: dict[str, Shard] = {}
    roots: list[str] = []
    for src in sources:
        s = str(src)
        if _BRACE.search(s) and not Path(s).expanduser().exists():
            paths = [Path(p).expanduser().absolute() for p in expand_braces(s)]
            roots.extend(str(p) for p in paths)
        else:
            p = Path(s).expanduser()
            if not p.exists():
                raise InvalidInput(f"source not found: {src}")
            p = p.resolve()
            roots.append(str(p))
            if p.is_dir():
                paths = sorted(q for q in p.iterdir() if q.suffix.lower() in SHARD_EXTENSIONS and q.is_file())
            elif p.suffix.lower() in SHARD_EXTENSIONS:
                paths = [p]
            else:
                raise InvalidInput(f"{src} is neither a .tar shard, a brace pattern nor a folder of shards")
        for path in paths:
            shards.setdefault(str(path), _shard(path))
    if not shards:
        raise InvalidInput(f"no shards in {', '.join(map(str, sources))}")
    return ShardDiscovery(sorted(shards.values(), key=lambda sh: sh.path), roots)


def split_key(name: str) -> tuple[str, str]:
    """webdataset's key rule: ``dir/0001.seg.jpg`` -> (``dir/0001``, ``seg.jpg``)."""
    folder, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def flatten(obj: dict, prefix: str = "") -> dict[str, str | None]:
    """A json object -> one level of string columns (nested keys joined by ``_``, lists as json text)."""
    out: dict[str, str | None] = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "_"))
        elif v is None:
            out[name] = None
        else:
            out[name] = json.dumps(v) if isinstance(v, list) else str(v)
    return out


def read_downloads(parquet: str | None) -> dict[str, dict]:
    """img2dataset's per-shard parquet: key -> its row (``{}`` without one). ``ShardError`` if unreadable."""
    if not parquet:
        return {}
    try:
        table = pq.read_table(parquet)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ShardError(f"img2dataset parquet {parquet} unreadable: {str(exc).splitlines()[0][:200]}", 0) from exc
    if "key" not in table.column_names:
        return {}
    return {str(r["key"]): r for r in table.to_pylist()}


def _sample(key: str, members: dict[str, bytes], download: dict | None) -> ShardSample:
    sample = ShardSample(key)
    for ext in IMAGE_MEMBERS:
        if ext in members:
            sample.image = members[ext]
            break
    if "txt" in members:
        sample.caption = members["txt"].decode("utf-8", "replace")
    if download:
        sample.meta.update({k: (None if v is None else str(v)) for k, v in download.items() if k not in _PARQUET_SKIP})
        if sample.caption is None and download.get("caption") is not None:
            sample.caption = str(download["caption"])
    if "json" in members:
        try:
            obj = json.loads(members["json"])
            if not isinstance(obj, dict):
                raise ValueError("not a json object")
        except ValueError as exc:
            sample.problem = f"metadata json does not parse: {str(exc)[:120]}"
            return sample
        sample.meta.update({k: v for k, v in flatten(obj).items() if k not in _PARQUET_SKIP})
    if sample.image is None:
        found = ", ".join(sorted(members)) or "nothing"
        sample.problem = f"no image member ({'/'.join(IMAGE_MEMBERS)}) in the sample, found {found}"
    return sample


def read_shard(shard: Shard) -> Iterator[ShardSample]:
    """The samples of one shard in tar order, then its img2dataset failed downloads (problem set, stage
    "download"). Raises ``ShardError`` when the tar is broken, after yielding the samples before the damage."""
    downloads = read_downloads(shard.parquet)
    seen: set[str] = set()
    n = 0
    try:
        with open(shard.path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            key, members = None, {}
            for member in tar:
                if not member.isfile():
                    continue
                k, ext = split_key(member.name)
                if k != key and key is not None:
                    n += 1
                    seen.add(key)
                    yield _sample(key, members, downloads.get(key))
                    members = {}
                key = k
                members[ext] = tar.extractfile(member).read()
            if key is not None:
                n += 1
                seen.add(key)
                yield _sample(key, members, downloads.get(key))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ShardError(f"broken tar after {n} samples: {type(exc).__name__}: {str(exc)[:160]}", n) from exc
    for key, row in downloads.items():
        if key in seen:
            continue
        status = row.get("status")
        reason = row.get("error_message") or ("missing from the tar" if status == "success" else f"status {status}")
        yield ShardSample(key, meta={k: (None if v is None else str(v)) for k, v in row.items()
                                     if k not in _PARQUET_SKIP}, problem=f"download failed: {reason}",
                          stage="download")


"""Files and thumbnails, only for rows of a served index: the id picks the row, the row names the file.

No path from a request reaches the filesystem. A row's file is served only while it is still the file that was
indexed (``clipdex.serve.files``: opened without following a symbolic link, a regular file with the row's size,
mtime and content hash, all checked on the open file, which is then the one read). Thumbnails are JPEGs cached on
disk (never in the index) under a key of the row, the file's size and mtime, the size and the time asked for; that
key is also the ETag. The file is checked before the cache is looked at. An image indexed from a webdataset shard
has no file of its own: its thumbnail is made from its image member, read from the tar by key
(``retrieval.io.shard_members``) and checked against the row's content hash.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from pathlib import Path

from PIL import Image

from clipdex.serve.config import MAX_T
from clipdex.serve.files import OpenedFile, open_indexed
from clipdex.serve.registry import NotFound, ServedIndex
from retrieval.errors import InvalidInput
from retrieval.io.imageprep import ImageReadError, content_hash, open_image, to_rgb
from retrieval.io.shard_members import read_row_image

log = logging.getLogger(__name__)
MAX_FILE = 256 << 20      # largest image file a thumbnail is made from (the indexer's limit)
MAX_FRAMES = 600          # frames decoded after a seek before giving up on reaching t


def row_file(served: ServedIndex, table: str, row_id: int) -> tuple[OpenedFile, dict]:
    """The file of a row, opened and checked to be the one that was indexed -> (opened file, row); close it."""
    names = served.schema(table).names
    if "path" not in names:
        raise NotFound(f"table {table!r} has no files to serve")
    wanted = ("id", "path", "bytes", "mtime", "hash", "t", "video_id")
    row = served.row(table, row_id, [c for c in wanted if c in names])
    path = row.get("path")
    if not isinstance(path, str) or not os.path.isabs(path):
        raise NotFound(f"row {row_id} of {table!r} has no file")
    stamp = row
    if table == "frames":   # a frame row has no size, mtime or hash: its video's row has
        stamp = served.row("videos", row["video_id"], ["bytes", "mtime", "hash"]) if row.get("video_id") is not None \
            else {}
    opened = open_indexed(path, stamp.get("bytes"), stamp.get("mtime"), stamp.get("hash"), f"row {row_id}")
    return opened, row


def thumb_key(served: ServedIndex, table: str, row_id: int, st: os.stat_result, size: int, t: float | None,
              extra: str = "") -> str:
    """The cache key (and ETag) of a thumbnail: the row, the size and mtime of the file it is made from (``st``),
    the size and time asked for, and ``extra`` (a shard sample's content hash)."""
    ident = f"{served.index.path}|{table}|{row_id}|{st.st_size}|{st.st_mtime_ns}|{size}|{t}{extra}"
    return hashlib.blake2b(ident.encode(), digest_size=16).hexdigest()


def _cached(cache_dir: Path, key: str) -> tuple[Path, bytes | None]:
    """Where the thumbnail of ``key`` is cached, and its bytes when it is."""
    cached = cache_dir / key[:2] / f"{key}.jpg"
    return cached, (cached.read_bytes() if cached.is_file() else None)


def thumbnail(served: ServedIndex, table: str, row_id: int, size: int, t: float | None,
              cache_dir: Path) -> tuple[bytes, str]:
    """A JPEG thumbnail of a row's image (or a video's frame at ``t`` seconds) -> (bytes, etag); cached."""
    sample = shard_sample(served, table, row_id)
    if sample is not None:
        return _sample_thumbnail(served, sample, size, cache_dir)
    opened, row = row_file(served, table, row_id)
    with opened:
        if table == "frames":
            t = row.get("t") or 0.0
        if t is not None and not (math.isfinite(t) and 0 <= t <= MAX_T):
            raise InvalidInput(f"t must be a number of seconds from 0 to {MAX_T:g}")
        key = thumb_key(served, table, row_id, opened.st, size, t)
        cached, data = _cached(cache_dir, key)
        if data is not None:
            return data, key
        img = video_frame(opened, t or 0.0) if table in ("videos", "frames") else _image(opened, size)
    return _saved(img, size, cached, cache_dir), key


def shard_sample(served: ServedIndex, table: str, row_id: int) -> dict | None:
    """The row (id, shard, key, hash) of an image indexed from a webdataset shard, or None for any other row."""
    if table != "images" or not {"shard", "key"} <= set(served.schema(table).names):
        return None
    row = served.row(table, row_id, ["id", "shard", "key", "hash"])
    return row if row.get("shard") and row.get("key") else None


def _sample_thumbnail(served: ServedIndex, row: dict, size: int, cache_dir: Path) -> tuple[bytes, str]:
    """A shard sample's thumbnail: its image member read from the tar by key, checked against the row's hash. The
    cache key holds the tar's size and mtime, as a file's holds the file's: a rewritten shard is read again."""
    try:
        st = os.stat(row["shard"])
    except OSError as exc:
        raise NotFound(f"row {row['id']}: shard unreadable ({exc.strerror or exc})") from exc
    key = thumb_key(served, "images", row["id"], st, size, None, f"|{row.get('hash')}")
    cached, data = _cached(cache_dir, key)
    if data is not None:
        return data, key
    try:
        img = open_image(read_row_image(row, MAX_FILE), (size, size))
    except ImageReadError as exc:
        raise NotFound(f"row {row['id']}: {exc.reason}") from exc
    return _saved(img, size, cached, cache_dir), key


def _saved(img: Image.Image, size: int, cached: Path, cache_dir: Path) -> bytes:
    """The JPEG thumbnail of ``img``, also written to ``cached`` (a full or read-only cache only costs speed)."""
    img = to_rgb(img)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    data = buf.getvalue()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, cached)
    except OSError as exc:
        log.warning("thumbnail cache %s: %s", cache_dir, exc)
    return data


def _image(opened: OpenedFile, size: int) -> Image.Image:
    name = opened.path.name
    if opened.st.st_size > MAX_FILE:
        raise InvalidInput(f"{name} is too large for a thumbnail")
    data = opened.read_all()   # what the file holds, never the limit allocated up front
    if content_hash(data) != opened.digest:   # rewritten in place since it was checked
        raise NotFound(f"{name} changed since it was indexed; index it again")
    try:
        return open_image(data, (size, size))
    except ImageReadError as exc:
        raise InvalidInput(f"cannot read {name}: {exc.reason}") from exc


def video_frame(opened: OpenedFile, t: float) -> Image.Image:
    """The first frame at or after ``t`` seconds (the last one when ``t`` is past the end)."""
    path = opened.path
    try:
        import av  # heavy optional dependency (the video extra)
    except ImportError:
        raise InvalidInput("video thumbnails need PyAV: pip install 'clipdex[video]'") from None
    try:
        with opened.reader() as f, av.open(f) as container:
            stream = container.streams.video[0]
            if t > 0 and stream.time_base:
                container.seek(int(t / stream.time_base), stream=stream, backward=True)
            last = None
            for n, frame in enumerate(container.decode(stream)):
                last = frame
                if frame.time is None or frame.time + 1e-6 >= t or n >= MAX_FRAMES:
                    break
            if last is None:
                raise InvalidInput(f"{path.name} has no decodable frame")
            return last.to_image()
    except (av.error.FFmpegError, IndexError, OverflowError) as exc:
        raise InvalidInput(f"cannot decode {path.name}: {exc}") from exc

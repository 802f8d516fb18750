"""Files and thumbnails, only for rows of a served index: the id picks the row, the row names the file.

No path from a request reaches the filesystem. A row's file is served only while it is still the file that was
indexed: a regular file (no FIFO or device) whose size and mtime match the row (a file swapped since indexing, a
symlink repointed elsewhere, is refused). Thumbnails are JPEGs cached on disk (never in the index) under a key of
the row, the file's size and mtime, the size and the time asked for; that key is also the ETag.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import stat
from pathlib import Path

from PIL import Image

from clipdex.serve.config import MAX_T
from clipdex.serve.registry import NotFound, ServedIndex
from retrieval.errors import InvalidInput
from retrieval.io.imageprep import ImageReadError, open_image, read_image_file, to_rgb

log = logging.getLogger(__name__)
MAX_FILE = 256 << 20      # largest image file a thumbnail is made from (the indexer's limit)
MAX_FRAMES = 600          # frames decoded after a seek before giving up on reaching t


def row_file(served: ServedIndex, table: str, row_id: int) -> tuple[Path, os.stat_result, dict]:
    """The file of a row, checked to be the one that was indexed -> (path, stat, row)."""
    names = served.schema(table).names
    if "path" not in names:
        raise NotFound(f"table {table!r} has no files to serve")
    row = served.row(table, row_id, [c for c in ("id", "path", "bytes", "mtime", "t", "video_id") if c in names])
    path = row.get("path")
    if not isinstance(path, str) or not os.path.isabs(path):
        raise NotFound(f"row {row_id} of {table!r} has no file")
    try:
        st = os.stat(path)
    except OSError:
        raise NotFound(f"the file of row {row_id} is gone: {path}") from None
    if not stat.S_ISREG(st.st_mode):
        raise NotFound(f"the file of row {row_id} is not a regular file")
    stamp = row
    if table == "frames":   # a frame row has no size or mtime: its video's row has
        stamp = served.row("videos", row["video_id"], ["bytes", "mtime"]) if row.get("video_id") is not None else {}
    changed = (stamp.get("bytes") is not None and stamp["bytes"] != st.st_size) or (
        stamp.get("mtime") is not None and abs(stamp["mtime"] - st.st_mtime) > 1e-3)
    if changed:
        raise NotFound(f"the file of row {row_id} changed since it was indexed; index it again")
    return Path(path), st, row


def thumb_key(served: ServedIndex, table: str, row_id: int, st: os.stat_result, size: int, t: float | None) -> str:
    ident = f"{served.index.path}|{table}|{row_id}|{st.st_size}|{st.st_mtime_ns}|{size}|{t}"
    return hashlib.blake2b(ident.encode(), digest_size=16).hexdigest()


def thumbnail(served: ServedIndex, table: str, row_id: int, size: int, t: float | None,
              cache_dir: Path) -> tuple[bytes, str]:
    """A JPEG thumbnail of a row's image (or a video's frame at ``t`` seconds) -> (bytes, etag); cached."""
    path, st, row = row_file(served, table, row_id)
    if table == "frames":
        t = row.get("t") or 0.0
    if t is not None and not (math.isfinite(t) and 0 <= t <= MAX_T):
        raise InvalidInput(f"t must be a number of seconds from 0 to {MAX_T:g}")
    key = thumb_key(served, table, row_id, st, size, t)
    cached = cache_dir / key[:2] / f"{key}.jpg"
    if cached.is_file():
        return cached.read_bytes(), key
    img = video_frame(path, t or 0.0) if table in ("videos", "frames") else _image(path, size)
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
    except OSError as exc:   # a full or read-only cache only costs speed
        log.warning("thumbnail cache %s: %s", cache_dir, exc)
    return data, key


def _image(path: Path, size: int) -> Image.Image:
    try:   # read_image_file reads what the file holds, never allocating the limit up front
        return open_image(read_image_file(str(path), MAX_FILE), (size, size))
    except ImageReadError as exc:
        raise InvalidInput(f"cannot read {path.name}: {exc.reason}") from exc


def video_frame(path: Path, t: float) -> Image.Image:
    """The first frame at or after ``t`` seconds (the last one when ``t`` is past the end)."""
    try:
        import av  # heavy optional dependency (the video extra)
    except ImportError:
        raise InvalidInput("video thumbnails need PyAV: pip install 'clipdex[video]'") from None
    try:
        with av.open(str(path)) as container:
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

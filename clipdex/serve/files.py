"""A row's file, opened once, proven to be the file that was indexed, and served from that open descriptor.

Only a row that records the content hash of its file (``hash``: images and videos; a frame uses its video's row)
has a file to serve. The path is opened with ``O_NOFOLLOW`` (a symbolic link is refused, never followed) and
``O_NONBLOCK`` (a FIFO cannot block), then everything is checked on the open descriptor, never on the path again (no
time-of-check to time-of-use gap): a regular file, the row's size and mtime, and its content, whose BLAKE2b-128
hash must be the row's. A file that passed is remembered by its identity (device, inode, size, and mtime and
ctime in nanoseconds: a rewrite in place changes the ctime even when the mtime is forged back with ``utime``, a
replacement changes the inode), up to ``REMEMBERED`` files, so that a video is hashed once, not on every range
request. The bytes sent are then read from that same descriptor.
"""
from __future__ import annotations

import errno
import hashlib
import mimetypes
import os
import re
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from clipdex.serve.registry import NotFound
from retrieval.cancel import checkpoint
from retrieval.io.files import fs_path

BLOCK = 1 << 20          # bytes hashed (or sent) per read
REMEMBERED = 4096        # files whose content was checked, remembered by identity
_LINK_ERRORS = (errno.ELOOP, errno.EMLINK)   # O_NOFOLLOW on a link: ELOOP (Linux, macOS), EMLINK (FreeBSD)
_checked: OrderedDict[tuple, None] = OrderedDict()
_lock = threading.Lock()


@dataclass
class OpenedFile:
    """An open, checked file: read it through ``read_all``, ``reader`` or ``pread``; close it when done."""
    path: Path
    fd: int
    st: os.stat_result
    digest: str

    def read_all(self) -> bytes:
        parts, pos = [], 0
        while pos < self.st.st_size:
            chunk = os.pread(self.fd, min(BLOCK, self.st.st_size - pos), pos)
            if not chunk:
                break
            parts.append(chunk)
            pos += len(chunk)
        return b"".join(parts)

    def reader(self):
        """A file object of its own over the same open file (for a decoder that reads and seeks)."""
        return os.fdopen(os.dup(self.fd), "rb")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    __del__ = close   # a response dropped before it was sent still closes its file

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def identity(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def file_digest(fd: int, size: int) -> str:
    """BLAKE2b-128 of the first ``size`` bytes of an open file (the indexers' ``content_hash``), read in blocks."""
    h, pos = hashlib.blake2b(digest_size=16), 0
    while pos < size:
        checkpoint()   # a request that timed out stops hashing a large video
        chunk = os.pread(fd, min(BLOCK, size - pos), pos)
        if not chunk:
            break
        h.update(chunk)
        pos += len(chunk)
    return h.hexdigest()


def open_indexed(path: str, size: int | None, mtime: float | None, digest: str | None, what: str) -> OpenedFile:
    """Open the file ``what`` (e.g. "row 5") was indexed from, refused (``NotFound``) unless it still is that file."""
    if not digest:
        raise NotFound(f"{what} records no content hash to check its file against; only files clipdex indexed "
                       "itself are served")
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(fs_path(path), flags)
    except OSError as exc:
        if exc.errno in _LINK_ERRORS:
            raise NotFound(f"the file of {what} is a symbolic link: links are never followed, only the file that "
                           "was indexed is served") from None
        raise NotFound(f"the file of {what} is gone: {path}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(f"the file of {what} is not a regular file")
        if (size is not None and size != st.st_size) or (mtime is not None and abs(mtime - st.st_mtime) > 1e-3):
            raise NotFound(f"the file of {what} changed since it was indexed; index it again")
        _check_content(fd, st, digest, what)
        os.set_blocking(fd, True)
        return OpenedFile(Path(path), fd, st, digest)
    except BaseException:
        os.close(fd)
        raise


def _check_content(fd: int, st: os.stat_result, digest: str, what: str) -> None:
    key = (*identity(st), digest)
    with _lock:
        if key in _checked:
            _checked.move_to_end(key)
            return
    if file_digest(fd, st.st_size) != digest or identity(os.fstat(fd)) != identity(st):
        raise NotFound(f"the file of {what} changed since it was indexed (its content is not what was indexed); "
                       "index it again")
    with _lock:
        _checked[key] = None
        while len(_checked) > REMEMBERED:
            _checked.popitem(last=False)


class RangeNotSatisfiable(Exception):
    pass


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range a ``Range`` header asks of ``size`` bytes -> (start, end exclusive), or None for the whole
    file (no header, not a single ``bytes=`` range: several ranges get the whole file, as RFC 9110 allows).
    ``RangeNotSatisfiable`` when the range starts past the end."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header or "")
    if m is None or m.group(1) == m.group(2) == "":
        return None
    if m.group(1) == "":   # the last n bytes
        n = int(m.group(2))
        if n == 0 or size == 0:
            raise RangeNotSatisfiable()
        return max(0, size - n), size
    start = int(m.group(1))
    end = size if m.group(2) == "" else int(m.group(2)) + 1
    if end <= start and m.group(2) != "":
        return None   # not a valid range: ignored
    if start >= size:
        raise RangeNotSatisfiable()
    return start, min(end, size)


def file_response(opened: OpenedFile, request: Request) -> Response:
    """The opened file as an HTTP response (200, or 206 for one byte range, 416 past the end); closes it."""
    size = opened.st.st_size
    headers = {"accept-ranges": "bytes", "etag": f'"{opened.digest}"', "x-content-type-options": "nosniff",
               "last-modified": formatdate(opened.st.st_mtime, usegmt=True),
               "content-disposition": f"inline; filename*=utf-8''{quote(opened.path.name)}"}
    media_type = mimetypes.guess_type(opened.path.name)[0] or "application/octet-stream"
    try:
        span = byte_range(request.headers.get("range"), size)
    except RangeNotSatisfiable:
        opened.close()
        return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
    start, end = span or (0, size)
    headers["content-length"] = str(end - start)
    if span is not None:
        headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
    if request.method == "HEAD":
        opened.close()
        return Response(status_code=206 if span else 200, headers=headers, media_type=media_type)

    async def body():
        try:
            pos = start
            while pos < end:
                chunk = await anyio.to_thread.run_sync(os.pread, opened.fd, min(BLOCK, end - pos), pos)
                if not chunk:
                    break
                pos += len(chunk)
                yield chunk
        finally:
            opened.close()

    return StreamingResponse(body(), status_code=206 if span else 200, headers=headers, media_type=media_type)

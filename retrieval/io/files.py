"""Files as the indexers and queries meet them: names that are not UTF-8, and opening only regular files.

**Stored paths.** On POSIX a file name is bytes; Python hands back names that are not valid UTF-8 with each bad
byte as a lone surrogate (``os.fsdecode``'s surrogateescape form), which Arrow cannot store. ``stored_path`` turns
such a name into an escaped string that can be stored, and ``fs_path`` turns it back, losslessly:

- a name without surrogates is stored as it is (nothing changes for ordinary names), unless it already reads as
  an escaped name (a backslash followed by another backslash or by ``xHH`` with HH in 80..ff);
- otherwise each backslash is doubled and each undecodable byte becomes ``\\xHH``.

So ``fs_path(stored_path(p)) == p`` for every ``p``, and two different names never share a stored form.

**Regular files only.** ``open_regular`` opens a path without blocking (a FIFO would wait for a writer forever,
``/dev/zero`` never ends), then refuses anything that is not a regular file; ``read_limited`` reads at most
``max_bytes`` from it. ``file_problem`` says, from ``os.stat`` alone, why a path is no file to read.
"""
from __future__ import annotations

import os
import re
import stat

_ESCAPED = re.compile(r"\\(\\|x[89a-f][0-9a-f])")
_SURROGATE = re.compile("[\udc80-\udcff]")


class NotAFile(OSError):
    """The path is not a regular file (a folder, a FIFO, a device, a socket)."""


def _has_surrogates(path: str) -> bool:
    return _SURROGATE.search(path) is not None


def _reads_as_escaped(text: str) -> bool:
    """True when every backslash in ``text`` starts a well-formed escape and there is at least one."""
    if "\\" not in text:
        return False
    return _ESCAPED.sub("", text).count("\\") == 0


def stored_path(path: str) -> str:
    """A file name (surrogateescape str) -> the string stored in a table (always encodable as UTF-8)."""
    if not _has_surrogates(path) and not _reads_as_escaped(path):
        return path
    out = path.replace("\\", "\\\\")
    return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", out)


def fs_path(stored: str) -> str:
    """The stored string -> the file name to open (the inverse of ``stored_path``)."""
    if not _reads_as_escaped(stored):
        return stored
    return _ESCAPED.sub(lambda m: "\\" if m.group(1) == "\\" else chr(0xDC00 + int(m.group(1)[1:], 16)), stored)


def kind_of(mode: int) -> str:
    """A short name for a non-regular file's type."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def file_problem(st: os.stat_result) -> str | None:
    """None for a regular file, else why it is not one to read (from its stat)."""
    if stat.S_ISREG(st.st_mode):
        return None
    return f"not a regular file ({kind_of(st.st_mode)})"


def open_regular(path: str):
    """Open ``path`` for reading in binary mode, refusing (``NotAFile``) what is not a regular file. Never blocks
    on a FIFO: the file is opened non-blocking and checked with ``fstat`` before a byte is read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        problem = file_problem(os.fstat(fd))
        if problem:
            raise NotAFile(f"{problem}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_limited(path: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; ``NotAFile`` or ``FileTooLarge`` otherwise.

    Memory follows the file, not the limit (``f.read(n)`` allocates ``n`` bytes up front: a 256 MiB limit cost
    256 MiB per small image): the file's size is asked first, a larger file refused unread, and a file that
    grows while it is read is read on in blocks, up to the limit."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise FileTooLarge(f"too large: over {max_bytes} bytes")
        data = f.read(size + 1)   # the whole file in one read; the extra byte notices a file that grew
        if len(data) <= size:
            return data
        parts, total = [data], len(data)
        while total <= max_bytes:
            chunk = f.read(min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
    if total > max_bytes:
        raise FileTooLarge(f"too large: over {max_bytes} bytes")
    return b"".join(parts)


class FileTooLarge(OSError):
    """The file holds more bytes than the reader accepts."""

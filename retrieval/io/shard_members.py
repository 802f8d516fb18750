"""Reading one indexed sample's image back out of its webdataset shard, by key, without reading the shard.

A row indexed from a shard has ``path`` ``SHARD#KEY`` and ``shard`` / ``key`` columns (``retrieval.io.shards``):
there is no file to open, so whoever needs its picture again (``clipdex dedup``'s probe codes and pixel check,
the service's thumbnails) reads the image member from the tar. ``MemberTable`` lists where each key's image member
lies in a shard (one pass over the tar's headers, seeking past the data: measured on a 1 GB shard of 10,000
samples of three members each, 1.3 s from a cold page cache, 0.7 s warm) and keeps the listings of recently read
shards, so a key is then one seek and one read (0.13 ms a key there).
The member is the one ``read_shard`` indexed: the first sample of a key, its first image member in
``IMAGE_MEMBERS`` order. A shard rewritten since it was listed (size or mtime) is listed again.

``read_row_image`` is the one call for any image row: a shard sample's member, or else the row's file. With the
row's content hash given, bytes that no longer hash to it (the shard or file changed since it was indexed) are
refused, so evidence is never taken from another picture than the row's.
"""
from __future__ import annotations

import os
import tarfile
import threading
from collections import OrderedDict

from retrieval.io.imageprep import MAX_BYTES, ImageReadError, content_hash, read_image_file
from retrieval.io.shards import group_samples, image_member

SHARDS_KEPT = 64   # shard listings kept (each about 100 bytes a sample)


def list_image_members(path: str) -> dict[str, tuple[int, int]]:
    """A tar's image members as ``read_shard`` indexes them (``shards.group_samples``, ``shards.image_member``):
    key -> (offset of the data, size), the first sample of each key only. Raises ``ImageReadError`` (stage "read")
    when the tar cannot be read; a tar broken part-way keeps the samples ``read_shard`` read before the damage."""
    out: dict[str, tuple[int, int]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:   # seekable: headers are read, the data skipped
            for key, members in group_samples(tar, lambda member, ext: (member.offset_data, member.size)):
                where = image_member(members)
                if key not in out and where is not None:
                    out[key] = where
    except (tarfile.TarError, EOFError) as exc:
        if not out:
            raise ImageReadError("read", f"shard {path} unreadable: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise ImageReadError("read", f"shard {path} unreadable: {exc.strerror or exc}") from exc
    return out


class MemberTable:
    """Where each key's image member lies, for the ``SHARDS_KEPT`` shards read last (thread-safe)."""

    def __init__(self, kept: int = SHARDS_KEPT):
        self.kept = kept
        self.listings: OrderedDict[str, tuple[tuple[int, int], dict[str, tuple[int, int]]]] = OrderedDict()
        self.lock = threading.Lock()

    def locate(self, shard: str, key: str) -> tuple[int, int]:
        """(offset, size) of ``key``'s image member in ``shard``; ``ImageReadError`` when it has none."""
        try:
            st = os.stat(shard)
        except OSError as exc:
            raise ImageReadError("read", f"shard {shard} unreadable: {exc.strerror or exc}") from exc
        stamp = (st.st_size, st.st_mtime_ns)
        with self.lock:   # one listing per shard, even when many threads ask at once
            held = self.listings.get(shard)
            if held is None or held[0] != stamp:
                held = self.listings[shard] = (stamp, list_image_members(shard))
            self.listings.move_to_end(shard)
            while len(self.listings) > self.kept:
                self.listings.popitem(last=False)
        where = held[1].get(key)
        if where is None:
            raise ImageReadError("read", f"no image member for key {key!r} in shard {shard}")
        return where

    def read(self, shard: str, key: str, max_bytes: int = MAX_BYTES) -> bytes:
        """The bytes of ``key``'s image member in ``shard`` (at most ``max_bytes``, else ``ImageReadError``)."""
        offset, size = self.locate(shard, key)
        if size > max_bytes:
            raise ImageReadError("read", f"member of {size:,} bytes, over the limit of {max_bytes:,}")
        try:
            with open(shard, "rb") as f:
                f.seek(offset)
                data = f.read(size)
        except OSError as exc:
            raise ImageReadError("read", f"shard {shard} unreadable: {exc.strerror or exc}") from exc
        if len(data) != size:
            raise ImageReadError("read", f"shard {shard} ends inside the member of key {key!r}")
        return data


MEMBERS = MemberTable()


def read_row_image(row: dict, max_bytes: int = MAX_BYTES, table: MemberTable = MEMBERS) -> bytes:
    """The image bytes of an ``images`` row (a dict with ``path`` and, when indexed from a shard, ``shard`` and
    ``key``; ``hash`` checked when present). Raises ``ImageReadError`` when they cannot be read or have changed."""
    if row.get("shard") and row.get("key"):
        data = table.read(row["shard"], row["key"], max_bytes)
    elif row.get("path"):
        data = read_image_file(row["path"], max_bytes)
    else:
        raise ImageReadError("read", "the row has no file")
    if row.get("hash") and content_hash(data) != row["hash"]:
        raise ImageReadError("read", "changed since it was indexed (its content hash differs)")
    return data

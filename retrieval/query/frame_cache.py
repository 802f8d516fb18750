"""Every frame of an index held once in memory, grouped by video in time order, for video search.

Video search needs, per query, the video of each frame the frame ANN returned and every frame vector of ~200
candidate videos. Asked of the store, both are filtered scans of the whole ``frames`` table (``id IN (...)``,
``video_id IN (...)``) that cost more than the search itself. ``frame_cache(index)`` reads the table once into
contiguous arrays (vectors (N, d) float32 and times, sorted by video then time, with each video's [start, end)
offsets) and answers both by ``searchsorted`` and slices. It is kept per open index while the store's
``version`` of ``frames`` and ``videos`` stays the same (any commit drops it), and only when the vectors fit
``CLIPDEX_FRAME_CACHE_MB`` (default 2048); otherwise, or when the backend has no version, ``frame_cache`` returns
None and video search asks the store as before.

Reading the table costs several queries' worth (4.8 s for 600,000 frames of 512 dimensions against 0.7 s for a
query), so it is read only for an index that answers more than one video query (``wanted``): a one-shot
``clipdex search --table videos`` keeps the store path; a server, a notebook or a batch of queries gets the cache.
"""
from __future__ import annotations

import os
import weakref
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from retrieval.store.base import arrow_to_vectors

DEFAULT_BUDGET_MB = 2048
_CACHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_USES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@dataclass
class FrameCache:
    """``vectors`` (N, d) float32 and ``t`` (N,) in (video_id, t) order; ``video_ids`` (V,) sorted, with frames
    ``starts[i]:starts[i+1]``; ``frame_ids`` (N,) sorted with ``frame_video`` (N,) their video; ``video_rows``
    sorted ids of the ``videos`` table; ``key``: the store versions it was read at."""

    key: tuple
    vectors: np.ndarray
    t: np.ndarray
    video_ids: np.ndarray
    starts: np.ndarray
    frame_ids: np.ndarray
    frame_video: np.ndarray
    video_rows: np.ndarray

    def video_of(self, frame_ids: np.ndarray) -> np.ndarray:
        """Video id of each frame id (n,) -> (m,) in the same order, unknown frame ids left out."""
        pos = np.searchsorted(self.frame_ids, frame_ids)
        ok = pos < len(self.frame_ids)
        ok[ok] = self.frame_ids[pos[ok]] == frame_ids[ok]
        return self.frame_video[pos[ok]]

    def frames(self, video_ids: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """([(F_i, d) float32 vectors], [(F_i,) times]) of each video in time order (empty for unknown ids)."""
        if not len(self.video_ids):
            return [self.vectors[:0]] * len(video_ids), [self.t[:0]] * len(video_ids)
        pos = np.searchsorted(self.video_ids, video_ids)
        found = (pos < len(self.video_ids)) & (self.video_ids[np.minimum(pos, len(self.video_ids) - 1)] == video_ids)
        lo = np.where(found, self.starts[pos.clip(max=len(self.video_ids))], 0)
        hi = np.where(found, self.starts[(pos + 1).clip(max=len(self.video_ids))], 0)
        return [self.vectors[a:b] for a, b in zip(lo, hi)], [self.t[a:b] for a, b in zip(lo, hi)]


def _budget_bytes() -> int:
    return int(float(os.environ.get("CLIPDEX_FRAME_CACHE_MB", DEFAULT_BUDGET_MB)) * 2**20)


def wanted(index, n_queries: int) -> bool:
    """Count ``n_queries`` video queries on ``index``; True once it has had more than one (the cache pays)."""
    _USES[index] = _USES.get(index, 0) + n_queries
    return _USES[index] > 1


def frame_cache(index, read: bool = True) -> FrameCache | None:
    """The index's frame cache, read now when missing or stale (unless ``read`` is False); None when it does not
    apply (see module doc)."""
    store = index.store
    if not (store.has_table("frames") and store.has_table("videos")):
        return None
    key = (store.version("frames"), store.version("videos"))
    if None in key:
        return None
    found = _CACHES.get(index)
    if store.count("frames") * index.dim * 4 > _budget_bytes():
        _CACHES.pop(index, None)
        return None
    if found is not None and found.key == key:
        return found
    if not read:
        return None
    cache = _read(index, key)
    _CACHES[index] = cache
    return cache


def _read(index, key: tuple) -> FrameCache:
    store, dim = index.store, index.dim
    parts = list(store.scan("frames", ["id", "video_id", "t", "vector"]))
    table = pa.Table.from_batches(parts) if parts else store.schema("frames").empty_table()
    fid = table.column("id").to_numpy().astype(np.int64)
    vid = table.column("video_id").to_numpy().astype(np.int64)
    t = table.column("t").to_numpy()
    vec, _ = arrow_to_vectors(table.column("vector"), dim)
    order = np.lexsort((t, vid))  # the order gather_frames sorts into: by video, then time, ties as scanned
    vid, t, vec = vid[order], t[order], np.ascontiguousarray(vec[order])
    video_ids, starts = np.unique(vid, return_index=True)
    by_id = np.argsort(fid, kind="stable")
    rows = np.concatenate([b.column(0).to_numpy() for b in store.scan("videos", ["id"])] or [np.zeros(0, np.int64)])
    return FrameCache(key, vec, t, video_ids, np.append(starts, len(vid)), fid[by_id],
                      table.column("video_id").to_numpy().astype(np.int64)[by_id], np.sort(rows.astype(np.int64)))

"""Video search through the in-memory frame cache gives the results of the store path (filtered scans), on both
backends, with filters, frames out of order, a video row missing, and after the index changes."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from retrieval.index.directory import create_index
from retrieval.query.frame_cache import frame_cache
from retrieval.query.video import VideoSearchOptions, gather_frames, search_videos

D = 16


def _build(path, backend: str, n_videos: int = 30, seed: int = 0):
    """Videos of 1-12 frames added in shuffled order (a video's frames are neither contiguous nor in time order);
    one frame whose video has no row."""
    rng = np.random.default_rng(seed)
    ix = create_index(path, dim=D, model="none", backend=backend)
    frames = [rng.standard_normal(D) + 0.8 * rng.standard_normal((int(rng.integers(1, 13)), D))
              for _ in range(n_videos)]
    frames = [(f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32) for f in frames]
    pooled = np.stack([f.mean(0) / np.linalg.norm(f.mean(0)) for f in frames]).astype(np.float32)
    vids = ix.add_vectors("videos", pooled, {"path": [f"v{i}.mp4" for i in range(n_videos)],
                                              "n_frames": [len(f) for f in frames]})
    vec = np.concatenate(frames)
    video_id = np.concatenate([np.full(len(f), v) for v, f in zip(vids, frames)])
    t = np.concatenate([np.arange(len(f)) * 0.5 for f in frames])
    order = rng.permutation(len(vec))
    orphan = vec[:1]
    ix.add_vectors("frames", np.concatenate([vec[order], orphan]), {
        "video_id": np.append(video_id[order], vids.max() + 100), "t": np.append(t[order], 0.0),
        "path": [f"v{v}.mp4" for v in video_id[order]] + ["gone.mp4"]})
    return ix, vec


def _both(ix, monkeypatch, **kw) -> tuple[pa.Table, pa.Table]:
    fast = search_videos(ix, **kw)
    monkeypatch.setenv("CLIPDEX_FRAME_CACHE_MB", "0")  # over budget: the store path
    try:
        assert frame_cache(ix) is None
        slow = search_videos(ix, **kw)
    finally:
        monkeypatch.delenv("CLIPDEX_FRAME_CACHE_MB")
    return fast, slow


def _assert_same(fast: pa.Table, slow: pa.Table):
    assert fast.column_names == slow.column_names and len(fast) == len(slow) > 0
    for name in fast.column_names:
        a, b = fast.column(name).to_pylist(), slow.column(name).to_pylist()
        if name in ("score", "frame_score", "pool_score"):
            np.testing.assert_allclose(a, b, atol=1e-6)
        else:
            assert a == b, name


@pytest.mark.parametrize("backend", ["lance", "faiss"])
def test_cache_path_equals_store_path(tmp_path, monkeypatch, backend):
    ix, vec = _build(tmp_path / "ix", backend)
    try:
        cache = frame_cache(ix)
        assert cache is not None and frame_cache(ix) is cache  # read once, kept
        ids = np.array([5, 0, 29, 12, 999], np.int64)  # 999: no such video
        for (a, ta), (b, tb) in zip(zip(*gather_frames(ix, ids, cache)), zip(*gather_frames(ix, ids))):
            assert np.array_equal(a, b) and np.array_equal(ta, tb)  # the same frames, in time order
        assert sum(len(t) for t in gather_frames(ix, ids, cache)[1][:4]) > 4
        rng = np.random.default_rng(1)
        for pool in ("max", "mean", "query-scoring"):
            opts = VideoSearchOptions(pool=pool, candidates=5, frame_factor=2, segments=True)
            q = vec[rng.integers(len(vec))] + 0.1 * rng.standard_normal(D).astype(np.float32)
            _assert_same(*_both(ix, monkeypatch, vectors=q, k=7, options=opts))
            _assert_same(*_both(ix, monkeypatch, vectors=q, k=7, options=opts, where="path != 'v3.mp4'"))
        batch = vec[:3]
        _assert_same(*_both(ix, monkeypatch, vectors=batch, k=4, options=VideoSearchOptions(candidates=100)))
        # a commit makes the cache stale: it is read again and sees the new video
        new = ix.add_vectors("videos", vec[:1], {"path": ["new.mp4"], "n_frames": [1]})
        ix.add_vectors("frames", vec[:1], {"video_id": new, "t": [0.0], "path": ["new.mp4"]})
        assert frame_cache(ix) is not cache
        fast, slow = _both(ix, monkeypatch, vectors=vec[0], k=3, options=VideoSearchOptions(alpha=0.0))
        _assert_same(fast, slow)
        assert "new.mp4" in fast.column("path").to_pylist()
    finally:
        ix.close()


def test_the_cache_is_read_from_the_second_query_of_an_open_index(tmp_path):
    ix, vec = _build(tmp_path / "ix", "lance")
    try:
        search_videos(ix, vectors=vec[0], k=3)  # one-shot (the CLI): the store answers, nothing is read
        assert frame_cache(ix, read=False) is None
        search_videos(ix, vectors=vec[1], k=3)
        assert frame_cache(ix, read=False) is not None
    finally:
        ix.close()
    ix2, vec2 = _build(tmp_path / "ix2", "faiss")
    try:
        search_videos(ix2, vectors=vec2[:2], k=3)  # a batch of queries reads it at once
        assert frame_cache(ix2, read=False) is not None
    finally:
        ix2.close()

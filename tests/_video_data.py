"""Shared helpers of the video tests: a generated corpus, stills at known times, synthetic frame-vector indexes."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from indexers.video_samples import make_bad_videos, make_videos, scene_frame


def make_corpus(root: Path) -> tuple[list[dict], dict[str, str]]:
    """Five good videos under root/good (different containers, fps, sizes, lengths) and the bad ones under root/bad."""
    return make_videos(root / "good", seed=0), make_bad_videos(root / "bad")


def still(video: dict, t: float, folder: Path | None = None):
    """The picture on screen at ``t`` seconds of a generated video (PIL), saved as PNG when ``folder`` is given."""
    img = Image.fromarray(scene_frame(video["seed"], t, video["size"]))
    if folder is None:
        return img
    path = Path(folder) / f"still_{video['seed']}_{t:.2f}.png"
    img.save(path)
    return str(path)


def tree_digest(path) -> dict:
    """{relative path: sha1} of every file under ``path``: equal before and after = the index is unchanged."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, path)] = hashlib.sha1(f.read()).hexdigest()
    return out


def synthetic_video_index(path, n_videos: int, max_frames: int, dim: int = 16, seed: int = 0):
    """A raw-vector index (model "none") with ``videos`` and ``frames`` built through ``add_vectors``.

    Video i has between 1 and ``max_frames`` frames at t = 0.5 s steps; its vector is the normalised mean of its
    frames, as the indexer stores it. Returns (index, {video id: (frames (F, d), t (F,))}).
    """
    from retrieval.index.directory import create_index
    from retrieval.algorithms.video import mean_pool_vectors

    rng = np.random.default_rng(seed)
    ix = create_index(path, dim=dim, model="none")
    per_video = []
    for i in range(n_videos):
        f = int(rng.integers(1, max_frames + 1))
        base = rng.standard_normal(dim)
        x = base + 0.8 * rng.standard_normal((f, dim))
        per_video.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    pooled = np.stack([mean_pool_vectors(x) for x in per_video])
    vids = ix.add_vectors("videos", pooled, {"path": [f"v{i}.mp4" for i in range(n_videos)],
                                              "n_frames": [len(x) for x in per_video]})
    fv = np.concatenate(per_video)
    video_id = np.concatenate([np.full(len(x), v) for v, x in zip(vids, per_video)])
    t = np.concatenate([np.arange(len(x)) * 0.5 for x in per_video])
    ix.add_vectors("frames", fv, {"video_id": video_id, "t": t, "frame_index": np.concatenate(
        [np.arange(len(x)) * 5 for x in per_video]), "path": [f"v{v}.mp4" for v in video_id]})
    truth = {int(v): (x, np.arange(len(x)) * 0.5) for v, x in zip(vids, per_video)}
    return ix, truth

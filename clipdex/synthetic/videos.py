"""Generated videos (tests, the notebook, benchmarks): scenes of coloured blocks with a moving shape.

A video with seed s is a run of one-second scenes; scene k has its own background colour, a coloured block and a
shape moving across it, so ``scene_frame(s, t)`` is the picture on screen at time t, known without decoding (a
still for "find this moment" queries: :func:`scene_still`). Also deliberately bad files: truncated, audio only,
empty, not a video; and :func:`synthetic_video_index`, a raw-vector index of videos and frames with known vectors.
Everything is drawn from a seed with numpy and encoded with PyAV; nothing is downloaded.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.algorithms.video import mean_pool_vectors
from retrieval.index.directory import create_index

CODECS = {".mp4": ("mp4", "mpeg4"), ".mkv": ("matroska", "mpeg4"), ".avi": ("avi", "mpeg4"),
          ".mov": ("mov", "mpeg4"), ".webm": ("webm", "libvpx"), ".m4v": ("mp4", "mpeg4")}


def _scene(seed: int, k: int) -> tuple:
    rng = random.Random(seed * 1009 + k)
    col = lambda: tuple(rng.randrange(256) for _ in range(3))  # noqa: E731
    return col(), col(), col(), (rng.random(), rng.random(), rng.random() * 0.6 + 0.2, rng.random() * 0.6 + 0.2)


def scene_frame(seed: int, t: float, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """The picture of video ``seed`` at ``t`` seconds: (H, W, 3) uint8, ``size`` = (W, H)."""
    w, h = size
    bg, block, shape, (bx, by, sx, sy) = _scene(seed, int(t))
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bg
    x0, y0 = int(bx * w * 0.5), int(by * h * 0.5)
    img[y0:y0 + h // 2, x0:x0 + w // 2] = block
    frac = t - int(t)  # the shape crosses the frame once per scene
    cx, cy, r = int((sx + 0.2 * frac) * w), int(sy * h), max(2, min(w, h) // 6)
    yy, xx = np.ogrid[:h, :w]
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = shape
    return img


def make_video(path: str | Path, seed: int, duration: float, fps: float = 10, size: tuple[int, int] = (64, 48)) -> dict:
    """Encode ``duration`` seconds of video ``seed`` at ``fps`` into ``path`` (container from the suffix)."""
    import av  # optional: the video extra

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, codec = CODECS[path.suffix.lower()]
    n = max(1, int(round(duration * fps)))
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=int(fps))
        s.width, s.height = size
        s.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            s.options = {"qscale": "3"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(scene_frame(seed, i / fps, size), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return {"path": str(path), "seed": seed, "duration": n / fps, "fps": fps, "size": size}


def scene_still(video: dict, t: float, folder: str | Path | None = None):
    """The picture on screen at ``t`` seconds of a video from :func:`make_video` (PIL image), or, when ``folder`` is
    given, the path of that picture saved there as PNG."""
    img = Image.fromarray(scene_frame(video["seed"], t, video["size"]))
    if folder is None:
        return img
    path = Path(folder) / f"still_{video['seed']}_{t:.2f}.png"
    img.save(path)
    return str(path)


def make_videos(folder: str | Path, seed: int = 0) -> list[dict]:
    """A small varied corpus: five videos of different containers, frame rates, sizes and lengths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specs = [("a_clip.mp4", 10, 6.0, (64, 48)), ("b_clip.mkv", 12, 4.0, (96, 64)), ("c_clip.avi", 25, 3.0, (48, 48)),
             ("sub/d_clip.webm", 10, 3.0, (64, 64)), ("sub/e_clip.mov", 8, 8.0, (80, 48))]
    out = []
    for j, (name, fps, dur, size) in enumerate(specs):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        out.append(make_video(folder / name, seed * 100 + j + 1, dur, fps, size))
    return out


def make_bad_videos(folder: str | Path) -> dict[str, str]:
    """Files that must end up in ``errors``: -> {kind: path} for truncated (mid-stream: frames kept, partial),
    corrupt (no container index), audio (audio only), empty (0 bytes), text (not a video)."""
    import av  # optional: the video extra

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "_full.mkv"
    make_video(tmp, 999, 8.0, 10)
    data = tmp.read_bytes()
    tmp.unlink()
    (folder / "truncated.mkv").write_bytes(data[: len(data) // 2])
    make_video(folder / "_full.mp4", 998, 2.0, 10)
    data = (folder / "_full.mp4").read_bytes()
    (folder / "_full.mp4").unlink()
    (folder / "corrupt.mp4").write_bytes(data[: len(data) // 2])  # the index (moov atom) is at the end: lost
    with av.open(str(folder / "audio.m4v"), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(16):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.avi").write_text("this is not a video\n" * 20)
    return {k: str(folder / n) for k, n in [("truncated", "truncated.mkv"), ("corrupt", "corrupt.mp4"),
                                              ("audio", "audio.m4v"), ("empty", "empty.mp4"), ("text", "notes.avi")]}


def make_video_corpus(root: str | Path, seed: int = 0) -> tuple[list[dict], dict[str, str]]:
    """:func:`make_videos` under ``root/good`` and :func:`make_bad_videos` under ``root/bad``."""
    root = Path(root)
    return make_videos(root / "good", seed=seed), make_bad_videos(root / "bad")


def synthetic_video_index(path, n_videos: int, max_frames: int, dim: int = 16, seed: int = 0):
    """A raw-vector index (model "none") with ``videos`` and ``frames`` built through ``add_vectors``.

    Video i has between 1 and ``max_frames`` frames at t = 0.5 s steps; its vector is the normalised mean of its
    frames, as the indexer stores it. Returns (index, {video id: (frames (F, d), t (F,))}).
    """
    rng = np.random.default_rng(seed)
    ix = create_index(path, dim=dim, model="none")
    per_video = []
    for _ in range(n_videos):
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

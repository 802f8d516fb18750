"""Videos for the near-duplicate benchmark and tests, with known truth (drawn with :mod:`.world_video`).

``make_dedup_videos(root)`` writes: base videos of moving, recolouring objects; a re-encoded copy of the first (another
container and size: *near*); a clip cut from it (seconds 4 to 9: *contained*, with that range); and pairs of
different videos that share an opening (3 s of black, 3 s of the same title card): *not* duplicates.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from clipdex.synthetic.videos import CODECS
from clipdex.synthetic.world_video import frame_at, track, world_video

DURATION, FPS = 12.0, 4


def _bases(seed: int) -> list[dict]:
    looks = [("circle", "red", "star", "blue"), ("square", "green", "heart", "orange"),
             ("triangle", "purple", "cross", "yellow"), ("hexagon", "pink", "diamond", "green"),
             ("star", "orange", "circle", "purple")]
    out = []
    for i, (s1, c1, s2, c2) in enumerate(looks):
        tracks = [track(s1, c1, 0, DURATION, "left", to="right", seed=seed + i),
                  track(s2, c2, 0, DURATION, "top", to="bottom", recolor="brown", recolor_at=6, size="small",
                        seed=seed + 10 + i)]
        out.append(world_video(tracks, DURATION, FPS, 64, seed=seed + i))
    return out


def _title(t: float, size: int = 64) -> np.ndarray:
    img = Image.new("RGB", (size, size), (20, 30, 90))
    ImageDraw.Draw(img).text((6, size // 2 - 6), "CLIPDEX", fill=(240, 220, 80))
    return np.asarray(img)


def encode_frames(path: str | Path, frame: Callable[[float], np.ndarray], duration: float, fps: int = FPS,
                  size: int = 64) -> str:
    """Encode ``frame(t)`` (H, W, 3) uint8 for ``duration`` seconds into ``path`` (container from the suffix)."""
    import av  # optional: the video extra

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, codec = CODECS[path.suffix.lower()]
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            s.options = {"qscale": "3"}
        for i in range(int(round(duration * fps))):
            arr = np.asarray(Image.fromarray(frame(i / fps)).resize((size, size), Image.BILINEAR))
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


def make_dedup_videos(root: str | Path, seed: int = 0) -> list[dict]:
    """Write the videos; returns [{"path", "role", "of" (the path it duplicates, if any), "start", "end"}]."""
    root = Path(root)
    a, b, c, d, e = _bases(seed)

    def pic(v):
        return lambda t: np.asarray(frame_at(v, min(t, DURATION - 1e-3)))

    def opening(first, v):
        return lambda t: first(t) if t < 3 else pic(v)(t)

    black = lambda t: np.zeros((64, 64, 3), np.uint8)  # noqa: E731
    out = [{"path": encode_frames(root / "a.mp4", pic(a), DURATION), "role": "original"}]
    out.append({"path": encode_frames(root / "a-copy.mkv", pic(a), DURATION, size=96), "role": "near",
                "of": out[0]["path"]})
    out.append({"path": encode_frames(root / "a-clip.mp4", lambda t: pic(a)(t + 4.0), 5.0), "role": "contained",
                "of": out[0]["path"], "start": 4.0, "end": 9.0})
    for name, first, v in (("black-b", black, b), ("black-c", black, c), ("title-d", _title, d),
                           ("title-e", _title, e)):
        out.append({"path": encode_frames(root / f"{name}.mp4", opening(first, v), DURATION), "role": "opening"})
    return out

"""Videos of the generated world (:mod:`.world`) with events at known times: objects appear, move and change colour.

A video is a list of *tracks*; a track is one object of the world shown from ``start`` to ``end`` seconds, moving
linearly from its first position to ``to`` (a position name or None), and taking colour ``recolor`` from
``recolor_at`` seconds on. ``frame_at(video, t)`` is the picture at time t, known without decoding; ``make_world_video``
encodes it with PyAV. Everything is seeded; nothing is downloaded.
"""
from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
from PIL import Image

from clipdex.synthetic.videos import CODECS
from clipdex.synthetic.world import COLORS, POSITIONS, make_background, make_object, render_scene


def track(shape: str, color: str, start: float, end: float, position: str = "center", to: str | None = None,
          recolor: str | None = None, recolor_at: float | None = None, size: str = "large", seed: int = 0) -> dict:
    """One object's life in a video (see the module docstring)."""
    obj = make_object(shape, color, random.Random(seed), size=size, position=position, style="filled")
    return {"object": obj, "start": start, "end": end, "to": to, "recolor": recolor, "recolor_at": recolor_at}


def world_video(tracks: list[dict], duration: float, fps: float = 4, size: int = 64, seed: int = 0) -> dict:
    """A video description: its tracks over a plain background chosen to contrast with every colour they take."""
    colors = [COLORS[t["object"]["color"]] for t in tracks] + [COLORS[t["recolor"]] for t in tracks if t["recolor"]]
    bg = make_background(random.Random(seed), colors, kind="plain")
    return {"tracks": tracks, "duration": duration, "fps": fps, "size": size, "background": bg, "seed": seed}


def scene_at(video: dict, t: float) -> dict:
    """The world scene on screen at ``t`` seconds: the objects of the tracks alive then, moved and recoloured."""
    objs = []
    for tr in video["tracks"]:
        if not tr["start"] <= t < tr["end"]:
            continue
        o = copy.deepcopy(tr["object"])
        if tr["to"]:
            f = (t - tr["start"]) / max(1e-6, tr["end"] - tr["start"])
            (x0, y0), (x1, y1) = POSITIONS[o["position"]], POSITIONS[tr["to"]]
            o["cx"], o["cy"] = x0 + f * (x1 - x0), y0 + f * (y1 - y0)
        if tr["recolor"] and t >= tr["recolor_at"]:
            o["color"], o["rgb"] = tr["recolor"], COLORS[tr["recolor"]]
        objs.append(o)
    return {"objects": objs, "background": video["background"]}


def frame_at(video: dict, t: float) -> Image.Image:
    """The picture at ``t`` seconds (cleanly rendered, so frames differ only where the scene changes)."""
    return render_scene(scene_at(video, t), video["size"], video["seed"], clean=True)


def make_world_video(path: str | Path, video: dict) -> dict:
    """Encode ``video`` into ``path`` (container from the suffix, see ``videos.CODECS``); returns ``video`` with
    its ``path``."""
    import av  # optional: the video extra

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt, codec = CODECS[path.suffix.lower()]
    n = max(1, int(round(video["duration"] * video["fps"])))
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=int(video["fps"]))
        s.width = s.height = video["size"]
        s.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            s.options = {"qscale": "2"}
        for i in range(n):
            arr = np.asarray(frame_at(video, i / video["fps"]))
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return {**video, "path": str(path)}

"""Drawn images: filled shapes in colours (the demo, tests, notebooks, benchmarks) and deliberately bad files.

Nothing here is downloaded; everything is drawn with Pillow from a seed.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLORS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220), "yellow": (240, 210, 30),
          "purple": (140, 50, 170), "orange": (245, 140, 20)}
SHAPES = ("circle", "square", "triangle", "star")
BACKGROUNDS = ((255, 255, 255), (235, 235, 225), (40, 40, 40))


def draw_shape(shape: str, color: tuple[int, int, int], size: int = 128, scale: float = 0.6,
               offset: tuple[float, float] = (0.0, 0.0), background=(255, 255, 255)) -> Image.Image:
    """One RGB image of a filled shape."""
    img = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(img)
    r = scale * size / 2
    cx, cy = size / 2 + offset[0] * size, size / 2 + offset[1] * size
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    elif shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        d.polygon(pts, fill=color)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return img


def make_shapes(folder: str | Path, per_pair: int = 2, size: int = 128, seed: int = 0,
                colors=None, shapes=None, fmt: str = "png") -> list[dict]:
    """Draw ``per_pair`` variants of every (shape, colour) into ``folder/<shape>/<colour>_<i>.<fmt>``.

    Returns one dict per image: path, shape, color, caption.
    """
    rng = random.Random(seed)
    folder = Path(folder)
    out = []
    for shape in shapes or SHAPES:
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for cname in colors or COLORS:
            for i in range(per_pair):
                img = draw_shape(shape, COLORS[cname], size, scale=rng.uniform(0.45, 0.8),
                                 offset=(rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)),
                                 background=rng.choice(BACKGROUNDS))
                path = folder / shape / f"{cname}_{i}.{fmt}"
                img.save(path)
                out.append({"path": str(path), "shape": shape, "color": cname,
                            "caption": f"a {cname} {shape}"})
    return out


def make_noisy_jpegs(folder: str | Path, n: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[str]:
    """``n`` photo-sized JPEGs ``img_<i>.jpg`` of drawn shapes on noisy backgrounds (a camera roll's decode cost,
    scaled down). Returns their paths."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLORS)
    out = []
    for i in range(n):
        img = draw_shape(SHAPES[i % len(SHAPES)], COLORS[names[i % len(names)]], size=max(size),
                         scale=float(rng.uniform(0.3, 0.8)))
        noise = rng.integers(0, 40, (max(size), max(size), 3), dtype=np.uint8)
        img = Image.fromarray(np.clip(np.asarray(img, np.int16) - noise, 0, 255).astype(np.uint8)).crop((0, 0, *size))
        out.append(str(folder / f"img_{i:05d}.jpg"))
        img.save(out[-1], quality=90)
    return out


def make_bad_files(folder: str | Path) -> dict[str, str]:
    """Write files that must be skipped and recorded: empty, truncated, not an image, wrong extension.
    Returns {path: what is wrong}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bad = {}
    p = folder / "empty.jpg"
    p.write_bytes(b"")
    bad[str(p)] = "empty"
    good = folder / ".tmp_good.png"
    draw_shape("circle", COLORS["red"]).save(good)
    data = good.read_bytes()
    good.unlink()
    p = folder / "truncated.png"
    p.write_bytes(data[: len(data) // 2])
    bad[str(p)] = "truncated"
    p = folder / "notes.jpg"
    p.write_text("this is a text file, not a picture\n")
    bad[str(p)] = "not an image"
    return bad

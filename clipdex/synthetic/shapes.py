"""Drawn images: filled shapes in colours (the demo, tests, notebooks, benchmarks) and deliberately bad files,
drawn with the world's shapes (:mod:`clipdex.synthetic.world`).

Nothing here is downloaded; everything is drawn with Pillow from a seed.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clipdex.synthetic import world

# the demo's and the tests' default palette and shapes: a subset of the world's (clipdex.synthetic.world)
COLORS = {name: world.COLORS[name] for name in ("red", "green", "blue", "yellow", "purple", "orange")}
SHAPES = ("circle", "square", "triangle", "star")
BACKGROUNDS = ((255, 255, 255), (235, 235, 225), (40, 40, 40))


def draw_shape(shape: str, color: tuple[int, int, int], size: int = 128, scale: float = 0.6,
               offset: tuple[float, float] = (0.0, 0.0), background=(255, 255, 255)) -> Image.Image:
    """One RGB image of a filled shape (any of ``world.SHAPES``), anti-aliased; ``scale`` is its diameter as a
    fraction of the side, ``offset`` its centre's shift from the middle (fractions of the side)."""
    ss = 4
    img = Image.new("RGB", (size * ss, size * ss), background)
    r = scale * size * ss / 2
    cx, cy = (0.5 + offset[0]) * size * ss, (0.5 + offset[1]) * size * ss
    ImageDraw.Draw(img).polygon(world.shape_points(shape, cx, cy, r), fill=tuple(color))
    return img.resize((size, size), Image.LANCZOS)


def make_shapes(folder: str | Path, per_pair: int = 2, size: int = 128, seed: int = 0,
                colors=None, shapes=None, fmt: str = "png") -> list[dict]:
    """Draw ``per_pair`` variants of every (shape, colour) into ``folder/<shape>/<colour>_<i>.<fmt>``: one filled
    object of the world (any size and position) on a plain background, cleanly rendered.

    Returns one dict per image: path, shape, color, caption ("a red circle") and the scene it shows.
    """
    rng = random.Random(seed)
    folder = Path(folder)
    out = []
    for shape in shapes or SHAPES:
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for cname in colors or COLORS:
            for i in range(per_pair):
                scene = world.sample_scene(rng, n_objects=1, shape=shape, color=cname, style="filled",
                                           background="plain")
                img = world.render_scene(scene, size, rng.randrange(1 << 30), clean=True)
                path = folder / shape / f"{cname}_{i}.{fmt}"
                img.save(path)
                out.append({"path": str(path), "shape": shape, "color": cname,
                            "caption": f"a {cname} {shape}", "scene": scene})
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

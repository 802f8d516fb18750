"""The generated world clipdex-tiny is trained on: scenes of 1 to 3 drawn objects, their pictures and their words.

A scene is a plain dict (JSON-friendly): ``{"objects": [obj, ...], "background": bg}`` where an object is
``{"shape", "color", "size", "position", "style"}`` plus its drawing parameters (centre ``cx, cy`` and radius ``r``
as fractions of the image, ``angle`` in degrees, outline ``line`` width fraction, ``rgb``), and a background is
``{"kind": plain|stripes|noise|gradient, "rgb", "rgb2", ...}``.

- :func:`sample_scene` draws a scene from a seeded ``random.Random`` (optionally keeping out colour-shape pairs);
- :func:`render_scene` paints it with Pillow with variety (anti-aliasing, rotation, jitter, line width, blur, JPEG
  noise) so a model learns the words, not one renderer's pixels;
- :mod:`.world_text` writes the captions, long descriptions and class names.

Everything is seeded; nothing is downloaded.
"""
from __future__ import annotations

import io
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "heart", "cross", "diamond")
COLORS = {"red": (220, 30, 30), "orange": (245, 140, 20), "yellow": (240, 210, 30), "green": (30, 170, 60),
          "blue": (30, 60, 220), "purple": (140, 50, 170), "pink": (250, 130, 190), "brown": (130, 80, 35),
          "black": (15, 15, 15), "white": (250, 250, 250), "gray": (128, 128, 128)}
SIZES = ("small", "large")
POSITIONS = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75),
             "center": (0.5, 0.5)}
STYLES = ("filled", "outline")
BACKGROUNDS = ("plain", "stripes", "noise", "gradient")
# background tones: pale and dark neutrals and tints (objects are kept visibly different from them)
_TONES = ((255, 255, 255), (235, 235, 225), (210, 215, 225), (200, 200, 200), (60, 60, 60), (35, 35, 45),
          (225, 240, 250), (250, 235, 215), (190, 220, 200), (245, 225, 235))
# how far each shape may turn before it would look like another one (a square turned 45 degrees is a diamond)
_MAX_TURN = {"circle": 180, "square": 12, "triangle": 25, "star": 180, "hexagon": 180, "heart": 20, "cross": 15,
             "diamond": 12}


def shape_points(shape: str, cx: float, cy: float, r: float, angle: float = 0.0) -> list[tuple[float, float]]:
    """Polygon of ``shape`` centred at (cx, cy) with radius ``r`` (pixels), turned by ``angle`` degrees.
    A circle is a 48-gon."""
    if shape == "circle":
        pts = [(math.cos(2 * math.pi * i / 48), math.sin(2 * math.pi * i / 48)) for i in range(48)]
    elif shape == "square":
        pts = [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]
    elif shape == "triangle":
        pts = [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)]
    elif shape == "star":
        pts = [((1.0 if i % 2 == 0 else 0.42) * math.cos(-math.pi / 2 + i * math.pi / 5),
                (1.0 if i % 2 == 0 else 0.42) * math.sin(-math.pi / 2 + i * math.pi / 5)) for i in range(10)]
    elif shape == "hexagon":
        pts = [(math.cos(math.pi / 3 * i), math.sin(math.pi / 3 * i)) for i in range(6)]
    elif shape == "heart":
        pts = []
        for i in range(40):
            t = 2 * math.pi * i / 40
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((x / 17.0, -y / 17.0 - 0.1))
    elif shape == "cross":
        a, b = 0.95, 0.32
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b),
               (-b, -b)]
    elif shape == "diamond":
        pts = [(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)]
    else:
        raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _contrast(a, b) -> float:
    return float(np.abs(np.asarray(a, float) - np.asarray(b, float)).sum())


def _jitter(rgb, rng: random.Random, amount: int = 18) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, v + rng.randint(-amount, amount)))) for v in rgb)


def make_object(shape: str, color: str, rng: random.Random, size: str | None = None, position: str | None = None,
                style: str | None = None, crowded: bool = False) -> dict:
    """One object with its words and its drawing parameters (fractions of the image side)."""
    size = size or rng.choice(SIZES)
    position = position or rng.choice(tuple(POSITIONS))
    style = style or rng.choice(STYLES)
    px, py = POSITIONS[position]
    if crowded:  # several objects share the picture: keep them apart
        r = rng.uniform(0.08, 0.11) if size == "small" else rng.uniform(0.14, 0.17)
        j = 0.03
    else:
        r = rng.uniform(0.09, 0.13) if size == "small" else rng.uniform(0.2, 0.3)
        j = 0.05 if size == "small" else 0.02
        if size == "large" and position != "center":  # a large object near an edge stays inside the picture
            px, py = 0.5 + (px - 0.5) * 0.6, 0.5 + (py - 0.5) * 0.6
    turn = _MAX_TURN[shape]
    return {"shape": shape, "color": color, "size": size, "position": position, "style": style,
            "cx": px + rng.uniform(-j, j), "cy": py + rng.uniform(-j, j), "r": r,
            "angle": rng.uniform(-turn, turn), "line": rng.uniform(0.015, 0.05), "rgb": _jitter(COLORS[color], rng)}


def make_background(rng: random.Random, avoid=(), kind: str | None = None) -> dict:
    """A background that every colour in ``avoid`` (RGB triples) stands out from."""
    kind = kind or rng.choice(BACKGROUNDS)
    tones = [t for t in _TONES if all(_contrast(t, a) > 150 for a in avoid)] or [(128, 200, 128)]
    rgb = rng.choice(tones)
    near = [t for t in tones if t != rgb and _contrast(t, rgb) < 260] or [rgb]
    rgb2 = rng.choice(near) if kind != "plain" else rgb
    return {"kind": kind, "rgb": _jitter(rgb, rng, 8), "rgb2": _jitter(rgb2, rng, 8),
            "period": rng.uniform(0.06, 0.2), "angle": rng.uniform(0, 180), "amount": rng.uniform(20, 60),
            "seed": rng.randrange(1 << 30)}


def sample_scene(rng: random.Random, n_objects: int | None = None, exclude=(), shapes=SHAPES, colors=None,
                 **fixed) -> dict:
    """A random scene of ``n_objects`` (1 to 3, mostly 1) objects with distinct positions.

    ``exclude``: (color, shape) pairs never drawn (held out of training); ``fixed`` fixes attributes of the first
    object (shape, color, size, position, style) or, with ``background=``, the background kind.
    """
    colors = list(colors or COLORS)
    n = n_objects or rng.choices((1, 2, 3), weights=(5, 3, 2))[0]
    positions = rng.sample(list(POSITIONS), n)
    if fixed.get("position"):
        positions = [fixed["position"]] + [p for p in positions if p != fixed["position"]][: n - 1]
    objs, used = [], set()
    for i in range(n):
        first = fixed if i == 0 else {}
        while True:
            shape, color = first.get("shape") or rng.choice(shapes), first.get("color") or rng.choice(colors)
            if (color, shape) not in exclude and (color, shape) not in used:
                break
        used.add((color, shape))
        objs.append(make_object(shape, color, rng, first.get("size"), positions[i], first.get("style"), n > 1))
    bg = make_background(rng, [COLORS[o["color"]] for o in objs], fixed.get("background"))
    return {"objects": objs, "background": bg}


def _paint_background(bg: dict, side: int) -> Image.Image:
    a, b = np.asarray(bg["rgb"], np.float32), np.asarray(bg["rgb2"], np.float32)
    if bg["kind"] == "plain":
        return Image.new("RGB", (side, side), tuple(int(v) for v in a))
    yy, xx = np.mgrid[:side, :side].astype(np.float32) / side
    th = math.radians(bg["angle"])
    u = xx * math.cos(th) + yy * math.sin(th)
    if bg["kind"] == "stripes":
        w = ((u / bg["period"]) % 1.0 < 0.5).astype(np.float32)[..., None]
        arr = a * w + b * (1 - w)
    elif bg["kind"] == "gradient":
        w = ((u - u.min()) / max(1e-6, float(u.max() - u.min())))[..., None]
        arr = a * (1 - w) + b * w
    else:  # noise
        nrng = np.random.default_rng(bg["seed"])
        arr = a + nrng.normal(0, bg["amount"], (side, side, 3)) * np.array([1.0, 1.0, 1.0])
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def render_scene(scene: dict, size: int = 64, seed: int = 0, clean: bool = False) -> Image.Image:
    """Paint ``scene`` as a ``size`` x ``size`` RGB image. ``seed`` picks the rendering variety (super-sampling
    factor, blur, pixel noise, JPEG quality); ``clean`` turns that variety off (sharp, anti-aliased, lossless)."""
    rng = random.Random(seed)
    ss = 4 if clean else rng.choice((1, 2, 3, 4))
    side = size * ss
    img = _paint_background(scene["background"], side)
    draw = ImageDraw.Draw(img)
    for o in scene["objects"]:
        pts = shape_points(o["shape"], o["cx"] * side, o["cy"] * side, o["r"] * side, o["angle"])
        if o["style"] == "filled":
            draw.polygon(pts, fill=tuple(o["rgb"]))
        else:
            width = max(1, int(round(o["line"] * side)))
            draw.line(pts + pts[:2], fill=tuple(o["rgb"]), width=width, joint="curve")
    if ss > 1:
        img = img.resize((size, size), rng.choice((Image.BILINEAR, Image.BICUBIC, Image.LANCZOS, Image.BOX)))
    if clean:
        return img
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9) * size / 64))
    if rng.random() < 0.3:
        arr = np.asarray(img, np.float32) + np.random.default_rng(seed).normal(0, rng.uniform(3, 12), (size, size, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.4:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=rng.randint(30, 92))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


def held_out_pairs() -> list[tuple[str, str]]:
    """Colour-shape pairs kept out of training (one per shape), to measure how the model composes words."""
    names = list(COLORS)
    return [(names[(3 * i + 2) % len(names)], s) for i, s in enumerate(SHAPES)]

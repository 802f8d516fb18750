"""A near-duplicate benchmark with known truth, drawn from the generated world (:mod:`.world`).

For each original drawing: exact copies (the same bytes; the same pixels saved differently), transformed copies
(``TRANSFORMS``, each at three strengths: re-encoded as JPEG, resized, cropped up to 20%, turned, recoloured,
watermarked, framed like a screenshot), another shot of the same scene (objects moved a little, rendered again) and
hard negatives: other drawings of the same shape and colour, and other scenes with the same objects. Videos are in
:mod:`.dedup_video`. ``make_dedup_images(root)`` writes the files and returns one ``Item`` per file.
"""
from __future__ import annotations

import copy
import io
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance

from clipdex.synthetic.world import POSITIONS, make_background, make_object, render_scene, sample_scene

SIZE = 128
STRENGTHS = (0, 1, 2)


@dataclass
class Item:
    """One generated file: ``group`` is its original's number (-1 for a hard negative, a group of its own);
    ``role``: original, exact, near, similar or negative; ``transform`` and ``strength`` say how it was made."""

    path: str
    group: int
    role: str
    transform: str
    strength: int

    def to_dict(self) -> dict:
        return asdict(self)


def _jpeg(img: Image.Image, s: int, rng: random.Random) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=(85, 50, 25)[s])
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _resize(img: Image.Image, s: int, rng: random.Random) -> Image.Image:
    f = (0.75, 0.5, 1.6)[s]
    return img.resize((round(img.width * f), round(img.height * f)), Image.BICUBIC)


def _crop(img: Image.Image, s: int, rng: random.Random) -> Image.Image:
    keep = (0.95, 0.9, 0.8)[s]
    w, h = round(img.width * keep), round(img.height * keep)
    x, y = rng.randint(0, img.width - w), rng.randint(0, img.height - h)
    return img.crop((x, y, x + w, y + h))


def _rotate(img: Image.Image, s: int, rng: random.Random) -> Image.Image:
    return img.rotate(rng.choice((-1, 1)) * rng.uniform(*((2, 4), (5, 8), (9, 12))[s]), Image.BICUBIC)


def _colour(img: Image.Image, s: int, rng: random.Random) -> Image.Image:
    img = ImageEnhance.Brightness(img).enhance((1.1, 1.25, 0.7)[s])
    img = ImageEnhance.Color(img).enhance((1.2, 0.6, 1.6)[s])
    r, g, b = img.split()
    shift = (6, 14, 24)[s]
    return Image.merge("RGB", (r.point(lambda v: min(255, v + shift)), g, b.point(lambda v: max(0, v - shift))))


def _watermark(img: Image.Image, s: int, rng: random.Random) -> Image.Image:
    img = img.copy()
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    alpha = (110, 160, 220)[s]
    for _ in range((1, 2, 3)[s]):
        x, y = rng.randint(2, img.width // 3), rng.randint(2, img.height - 14)
        draw.text((x, y), "(c) clipdex", fill=(255, 255, 255, alpha))
        draw.text((x + 1, y + 1), "(c) clipdex", fill=(0, 0, 0, alpha // 2))
    img.paste(layer, (0, 0), layer)
    return img


def _screenshot(img: Image.Image, s: int, rng: random.Random) -> Image.Image:
    pad, bar = (4, 10, 20)[s], (8, 14, 20)[s]
    frame = rng.choice(((236, 236, 236), (40, 42, 48), (250, 250, 250)))
    out = Image.new("RGB", (img.width + 2 * pad, img.height + 2 * pad + bar), frame)
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, 0, out.width, bar - 1), fill=(70, 110, 180))
    out.paste(img, (pad, pad + bar))
    return out


TRANSFORMS = {"jpeg": _jpeg, "resize": _resize, "crop": _crop, "rotate": _rotate, "colour": _colour,
              "watermark": _watermark, "screenshot": _screenshot}


def another_shot(scene: dict, rng: random.Random) -> dict:
    """The same scene shot again: every object moved by up to 4% of the picture and resized by up to 8%."""
    out = copy.deepcopy(scene)
    for o in out["objects"]:
        o["cx"] += rng.uniform(-0.04, 0.04)
        o["cy"] += rng.uniform(-0.04, 0.04)
        o["r"] *= rng.uniform(0.92, 1.08)
    return out


def same_shape_drawing(scene: dict, rng: random.Random) -> dict:
    """Another drawing of the first object's shape and colour: a different layout (size or position, other
    objects, another background)."""
    first = scene["objects"][0]
    while True:
        other = sample_scene(rng, shape=first["shape"], color=first["color"])
        o = other["objects"][0]
        if (o["size"], o["position"]) != (first["size"], first["position"]):
            return other


def same_objects_scene(scene: dict, rng: random.Random) -> dict:
    """The same objects (shape, colour, size, style) at other positions, on another background."""
    objs = scene["objects"]
    while True:
        positions = rng.sample(list(POSITIONS), len(objs))
        if positions != [o["position"] for o in objs]:
            break
    moved = [make_object(o["shape"], o["color"], rng, o["size"], p, o["style"], len(objs) > 1)
             for o, p in zip(objs, positions)]
    return {"objects": moved, "background": make_background(rng, [tuple(o["rgb"]) for o in moved])}


def make_dedup_images(root: str | Path, n_originals: int = 60, seed: int = 0, negatives: int = 3,
                      transforms=tuple(TRANSFORMS), size: int = SIZE) -> list[Item]:
    """Write the image benchmark under ``root`` (PNG, JPEG) and return its items (see the module docstring)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    items: list[Item] = []

    def save(img: Image.Image, name: str, group: int, role: str, transform: str, strength: int, fmt: str = "PNG"):
        path = root / name
        img.save(path, format=fmt, **({"quality": 92} if fmt == "JPEG" else {"compress_level": 6}))
        items.append(Item(str(path), group, role, transform, strength))

    for g in range(n_originals):
        scene = sample_scene(rng)
        img = render_scene(scene, size, seed=rng.randrange(1 << 30))
        save(img, f"o{g:04d}.png", g, "original", "", 0)
        (root / f"o{g:04d}-copy.png").write_bytes((root / f"o{g:04d}.png").read_bytes())
        items.append(Item(str(root / f"o{g:04d}-copy.png"), g, "exact", "copy", 0))
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)  # same pixels, other bytes
        (root / f"o{g:04d}-resaved.png").write_bytes(buf.getvalue())
        items.append(Item(str(root / f"o{g:04d}-resaved.png"), g, "exact", "resave", 0))
        for name in transforms:
            for s in STRENGTHS:
                out = TRANSFORMS[name](img, s, rng)
                fmt = "JPEG" if name == "jpeg" else "PNG"
                save(out, f"o{g:04d}-{name}{s}.{'jpg' if fmt == 'JPEG' else 'png'}", g, "near", name, s, fmt)
        shot = render_scene(another_shot(scene, rng), size, seed=rng.randrange(1 << 30))
        save(shot, f"o{g:04d}-shot.png", g, "similar", "another_shot", 0)
        for k in range(negatives):
            other = same_objects_scene(scene, rng) if k == negatives - 1 else same_shape_drawing(scene, rng)
            kind = "same_objects" if k == negatives - 1 else "same_shape"
            save(render_scene(other, size, seed=rng.randrange(1 << 30)), f"n{g:04d}-{k}.png", -1, "negative", kind, 0)
    return items

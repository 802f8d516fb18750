"""A world where retrieval augmentation has something to add: a long tail, a domain shift and a clean control, with
a large, noisy captioned corpus built like a web crawl. Seeded; nothing is downloaded.

- **styles** the model saw little of (:data:`SHIFT_STYLES`): pencil-like sketches (the edges alone), grey reliefs,
  objects filled with a texture, clutter of small marks around the object; drawn over the world's renderer by
  :func:`render_styled`;
- the **long tail**: the colour-shape pairs clipdex-tiny never saw in training (``world.held_out_pairs()``), which
  it classifies far worse than the pairs it saw;
- the **corpus** (:func:`corpus_rows`): many drawings of every kind (all pairs and every style, the tail pairs and
  the styles rare, as on the web), each with a noisy caption: a world caption with style words, a partial one,
  another picture's caption, or junk.

:func:`make_gains_files` writes the corpus manifest, the three labelled test sets (``longtail``, ``shifted``,
``clean``, :func:`eval_scenes`), tuning splits drawn with other seeds and shots per class.
"""
from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from clipdex.synthetic.world import COLORS, SHAPES, held_out_pairs, render_scene, sample_scene, shape_points
from clipdex.synthetic.world_text import caption

SHIFT_STYLES = ("sketch", "emboss", "texture", "clutter")
# measured, then left out of SHIFT_STYLES: they destroy the shape itself (a classifier fitted on 240 labelled
# pictures of the style does no better than zero-shot), so no support set or caption can bring it back
LOSSY_STYLES = ("strokes", "occlusion")
STYLE_WORDS = {"sketch": ("pencil sketch", "a line drawing", "sketched in pencil", "as a sketch"),
               "emboss": ("embossed", "embossed in grey", "as a relief", "stamped relief"),
               "strokes": ("crossed by strokes", "with scribbles over it", "scribbled over", "with lines drawn across"),
               "texture": ("with a striped texture", "filled with a pattern", "with hatching", "textured"),
               "clutter": ("among clutter", "with many small marks around", "on a cluttered background",
                           "among dots and dashes"),
               "occlusion": ("partly hidden", "partly covered by a block", "half hidden", "behind a box")}
JUNK = ("image", "untitled", "img_{n}.png", "download free clipart", "click to enlarge", "stock picture {n}",
        "my drawing", "new post", "see more", "thumbnail", "photo {n}", "art print for sale", "wallpaper hd")
# how a corpus caption is written: the world's caption (+ style words), a partial one, another picture's, junk
CAPTION_MIX = {"full": 0.6, "partial": 0.15, "wrong": 0.1, "junk": 0.15}
MARK_TONES = ((40, 40, 40), (120, 120, 120), (200, 200, 200), (90, 60, 30), (30, 90, 120), (150, 30, 90))


def _marks(draw: ImageDraw.ImageDraw, side: int, rng: random.Random, n: int, avoid=None) -> None:
    """``n`` small marks (dots, dashes, rings) in random tones, away from the disc ``avoid`` = (cx, cy, r)."""
    for _ in range(n):
        for _try in range(10):
            x, y = rng.uniform(0, side), rng.uniform(0, side)
            if avoid is None or (x - avoid[0]) ** 2 + (y - avoid[1]) ** 2 > (avoid[2] * 1.15) ** 2:
                break
        s = rng.uniform(0.02, 0.05) * side
        tone = rng.choice(MARK_TONES + tuple(COLORS.values()))
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse((x - s / 2, y - s / 2, x + s / 2, y + s / 2), fill=tone)
        elif kind == 1:
            a = rng.uniform(0, 6.283)
            draw.line((x, y, x + s * 1.6 * np.cos(a), y + s * 1.6 * np.sin(a)), fill=tone, width=max(1, side // 40))
        else:
            draw.ellipse((x - s, y - s, x + s, y + s), outline=tone, width=max(1, side // 50))


def _texture(size: tuple[int, int], rgb, rng: random.Random) -> Image.Image:
    """Stripes or checks of ``rgb`` and a pale tone (the object's fill in the ``texture`` style)."""
    w, h = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    period = rng.uniform(0.06, 0.12) * w
    a = np.deg2rad(rng.uniform(0, 180))
    u = (xx * np.cos(a) + yy * np.sin(a)) / period
    if rng.random() < 0.5:
        on = (u % 1.0) < 0.5
    else:
        v = (-xx * np.sin(a) + yy * np.cos(a)) / period
        on = ((np.floor(u) + np.floor(v)) % 2) == 0
    other = np.array(rng.choice(((250, 250, 250), (20, 20, 20), (200, 200, 200))), np.float32)
    arr = np.where(on[..., None], np.asarray(rgb, np.float32), other)
    return Image.fromarray(arr.astype(np.uint8))


def render_styled(scene: dict, style: str, size: int = 64, seed: int = 0) -> Image.Image:
    """``scene`` drawn by the world's renderer, then changed by ``style``: ``plain`` (as is), ``sketch`` (its edges,
    dark on white), ``emboss`` (a grey relief), ``texture`` (filled with stripes or checks), ``clutter`` (15-30
    marks around); and the lossy ``strokes`` (drawn as outlines, 3-6 long lines across), ``occlusion`` (a block
    hiding 30-45% of the first object)."""
    rng = random.Random(seed)
    if style == "strokes":
        scene = {**scene, "objects": [{**o, "style": "outline"} for o in scene["objects"]]}
    elif style == "texture":
        scene = {**scene, "objects": [{**o, "style": "filled"} for o in scene["objects"]]}
    elif style not in ("plain", "clutter", "occlusion", "sketch", "emboss"):
        raise ValueError(f"unknown style {style!r}; styles: plain, {', '.join(SHIFT_STYLES + LOSSY_STYLES)}")
    side = size * 2  # drawn at twice the size (the world's renderer supersamples that 4 times), then reduced
    img = render_scene(scene, side, rng.randrange(1 << 30), clean=True)
    draw = ImageDraw.Draw(img)
    first = scene["objects"][0]
    disc = (first["cx"] * side, first["cy"] * side, first["r"] * side)
    if style == "texture":
        for o in scene["objects"]:
            mask = Image.new("L", (side, side), 0)
            ImageDraw.Draw(mask).polygon(shape_points(o["shape"], o["cx"] * side, o["cy"] * side, o["r"] * side,
                                                      o["angle"]), fill=255)
            img.paste(_texture((side, side), o["rgb"], rng), (0, 0), mask)
    elif style == "strokes":
        for _ in range(rng.randint(3, 6)):
            pts = [(rng.uniform(-0.1, 1.1) * side, rng.uniform(-0.1, 1.1) * side) for _ in range(2)]
            draw.line(pts, fill=rng.choice(MARK_TONES + tuple(COLORS.values())),
                      width=max(1, int(rng.uniform(0.015, 0.035) * side)))
    elif style == "clutter":
        _marks(draw, side, rng, rng.randint(15, 30), avoid=disc)
    elif style == "occlusion":
        cx, cy, r = disc
        frac = rng.uniform(0.3, 0.45)
        tone = rng.choice(MARK_TONES)
        edge = rng.randrange(4)  # the block covers one side of the object
        box = [(cx - r * 1.1, cy - r * 1.1, cx - r * 1.1 + 2.2 * r * frac, cy + r * 1.1),
               (cx + r * 1.1 - 2.2 * r * frac, cy - r * 1.1, cx + r * 1.1, cy + r * 1.1),
               (cx - r * 1.1, cy - r * 1.1, cx + r * 1.1, cy - r * 1.1 + 2.2 * r * frac),
               (cx - r * 1.1, cy + r * 1.1 - 2.2 * r * frac, cx + r * 1.1, cy + r * 1.1)][edge]
        draw.rectangle(box, fill=tone)
    img = img.resize((size, size), Image.LANCZOS)
    if style == "sketch":  # the edges alone, dark on white, like a pencil drawing
        edges = ImageOps.autocontrast(ImageOps.grayscale(img).filter(ImageFilter.FIND_EDGES))
        img = ImageOps.invert(edges).convert("RGB")
    elif style == "emboss":
        img = img.filter(ImageFilter.EMBOSS)
    if rng.random() < 0.3:
        arr = np.asarray(img, np.float32) + np.random.default_rng(seed).normal(0, rng.uniform(2, 8), (size, size, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img


def _tail_exclude() -> set:
    return set(held_out_pairs())


def eval_scenes(kind: str, n: int, seed: int = 0) -> list[tuple[dict, str]]:
    """``n`` single-object (scene, style) pairs of a test set, the class being the object's shape (classes cycle,
    so every class gets n / 8):

    - ``clean``: colour-shape pairs the model trained on, drawn as the world draws them (``plain``);
    - ``longtail``: only the held-out colour-shape pairs (``world.held_out_pairs()``), ``plain``;
    - ``shifted``: trained pairs in one of :data:`SHIFT_STYLES` (cycling).
    """
    if kind not in ("clean", "longtail", "shifted"):
        raise ValueError(f"unknown test set {kind!r}; sets: clean, longtail, shifted")
    rng = random.Random(f"{kind}-{seed}")
    tail = dict((s, c) for c, s in held_out_pairs())
    out = []
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        if kind == "longtail":
            scene = sample_scene(rng, n_objects=1, shape=shape, color=tail[shape])
        else:
            scene = sample_scene(rng, n_objects=1, shape=shape, exclude=_tail_exclude())
        out.append((scene, "plain" if kind != "shifted" else SHIFT_STYLES[(i // len(SHAPES)) % len(SHIFT_STYLES)]))
    return out


def corpus_caption(scene: dict, style: str, rng: random.Random, other: dict | None = None) -> tuple[str, str]:
    """A web-like caption of a styled scene and how it was written (a key of :data:`CAPTION_MIX`)."""
    kind = rng.choices(tuple(CAPTION_MIX), weights=tuple(CAPTION_MIX.values()))[0]
    if kind == "junk":
        return rng.choice(JUNK).format(n=rng.randrange(10000)), kind
    if kind == "wrong" and other is not None:
        return caption(other, rng), kind
    if kind == "partial":
        o = rng.choice(scene["objects"])
        return rng.choice((f"a {o['color']} shape", f"something {o['color']}", f"a {o['shape']}",
                           f"{o['shape']} drawing", f"{o['color']} and more")), kind
    text = caption(scene, rng)
    if style != "plain" and rng.random() < 0.8:
        text += " " + rng.choice(STYLE_WORDS[style])
    return text, "full"


def corpus_rows(n: int, seed: int = 0, tail: float = 0.04, shifted: float = 0.3) -> list[dict]:
    """``n`` corpus entries built like a web crawl: scenes of 1-3 objects; a share ``tail`` of them shows a held-out
    colour-shape pair (the tail: present, but rare), a share ``shifted`` is drawn in a shift style (evenly over
    :data:`SHIFT_STYLES`), the rest plain. Each row: scene, style, caption, caption_kind, shapes (of the scene)."""
    rng = random.Random(f"corpus-{seed}")
    pairs = held_out_pairs()
    rows, prev = [], None
    for _ in range(n):
        u = rng.random()
        if u < tail:
            color, shape = rng.choice(pairs)
            scene = sample_scene(rng, shape=shape, color=color)
        else:
            scene = sample_scene(rng, exclude=_tail_exclude())
        style = rng.choice(SHIFT_STYLES) if rng.random() < shifted else "plain"
        text, kind = corpus_caption(scene, style, rng, prev)
        rows.append({"scene": scene, "style": style, "caption": text, "caption_kind": kind,
                     "shapes": sorted({o["shape"] for o in scene["objects"]})})
        prev = scene
    return rows


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _draw(folder: Path, items: list[tuple[dict, str]], seed: int, size: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (scene, style) in enumerate(items):
        path = folder / f"{i:05d}.png"
        render_styled(scene, style, size, seed * 1_000_003 + i).save(path)
        paths.append(str(path))
    return paths


def make_gains_files(root: str | Path, n_test: int = 1000, n_corpus: int = 8000, n_tune: int = 200,
                     shots: int = 16, seed: int = 0, size: int = 64, tail: float = 0.04,
                     shifted: float = 0.3) -> dict:
    """Everything the retrieval-gain benchmark needs, under ``root`` (paths in the CSVs relative to ``root``):

    - ``corpus.csv`` (path, caption): :func:`corpus_rows` (``tail``, ``shifted``) drawn into ``corpus/``;
    - per set ``longtail``, ``shifted``, ``clean``: ``<set>.csv`` (path, label) of ``n_test`` test images and
      ``<set>_tune.csv`` of ``n_tune`` tuning images (another seed: never a test image);
    - ``<set>_shots.csv`` (path, label): ``shots`` images per class drawn like the set (other seeds);
    - ``classes.txt``: the 8 shapes.
    Returns the paths and the corpus rows (scene, style, caption, caption_kind, shapes)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = corpus_rows(n_corpus, seed, tail, shifted)
    paths = _draw(root / "corpus", [(r["scene"], r["style"]) for r in rows], seed + 1, size)
    _write_csv(root / "corpus.csv", ["path", "caption"],
               [[os.path.relpath(p, root), r["caption"]] for p, r in zip(paths, rows)])
    out = {"root": str(root), "corpus": str(root / "corpus.csv"), "corpus_rows": rows,
           "classes": str(root / "classes.txt")}
    for k, kind in enumerate(("longtail", "shifted", "clean")):
        for split, n, s in (("", n_test, seed), ("_tune", n_tune, seed + 100)):
            items = eval_scenes(kind, n, s)
            drawn = _draw(root / f"{kind}{split}", items, seed + 10 * (k + 1) + (5 if split else 0), size)
            _write_csv(root / f"{kind}{split}.csv", ["path", "label"],
                       [[os.path.relpath(p, root), sc["objects"][0]["shape"]] for p, (sc, _) in zip(drawn, items)])
            out[f"{kind}{split}"] = str(root / f"{kind}{split}.csv")
        shot_items = eval_scenes(kind, shots * len(SHAPES), seed + 200)
        drawn = _draw(root / f"{kind}_shots", shot_items, seed + 10 * (k + 1) + 7, size)
        _write_csv(root / f"{kind}_shots.csv", ["path", "label"],
                   [[os.path.relpath(p, root), sc["objects"][0]["shape"]] for p, (sc, _) in zip(drawn, shot_items)])
        out[f"{kind}_shots"] = str(root / f"{kind}_shots.csv")
    (root / "classes.txt").write_text("\n".join(SHAPES) + "\n")
    return out

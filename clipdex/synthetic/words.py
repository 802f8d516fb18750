"""Words and pictures: a generated retrieval set where the answer depends on words (hybrid search, OCR).

Pictures are drawn shapes of the world (what ``clipdex-tiny`` knows), some carrying rendered text: a shop sign,
a label, a receipt with a total, a product code; in several fonts (those on the machine, else Pillow's default),
sizes (12 to 28 px), small rotations and noise. File names and captions share the query's words or not. Four
kinds of query, each with its relevant pictures:

- ``ocr``: words only in the picture (``bakery``, ``total 42.17``, ``qx-2041``); the look-alikes carry other
  words in the same kind of sign (a receipt with ``TOTAL 17.42``, a code ``QX-0412``), so only reading finds the
  answer;
- ``meta``: words only in the file name or the caption (``harbour``), on a plain drawing;
- ``visual``: what the drawing shows (``a red circle``), no words anywhere;
- ``mixed``: both (``a red circle bakery``): the BAKERY sign on a red circle, among BAKERY signs on other shapes
  and red circles with other signs.

Everything is seeded; nothing is downloaded.
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clipdex.synthetic.shapes import BACKGROUNDS, COLORS, SHAPES, draw_shape

SIGNS = ("BAKERY", "HARBOUR", "PHARMACY", "LIBRARY", "STATION", "MUSEUM", "GARAGE", "FLORIST", "CINEMA", "HOTEL",
         "MARKET", "DENTIST", "BUTCHER", "GALLERY", "BREWERY", "TAILOR", "BARBER", "CASINO", "POTTERY", "KARAOKE")
PLACES = ("harbour", "lighthouse", "vineyard", "glacier", "canyon", "meadow", "orchard", "quarry", "lagoon",
          "volcano", "prairie", "marina", "plateau", "estuary", "bayou", "fjord", "tundra", "oasis", "delta", "atoll")
# words only distractors carry (no query asks for them), and the words of the mixed queries' signs
DECOYS = ("ANTIQUES", "BOOKSHOP", "CHEMIST", "DINER", "EMPORIUM", "FOUNDRY", "GROCER", "HARDWARE", "INN", "JEWELLER",
          "KIOSK", "LAUNDRY", "MILLINER", "NURSERY", "OPTICIAN", "PAWNSHOP", "QUILTS", "ROASTERY", "SADDLER", "TOYS")
MIXED = ("PIZZERIA", "BAZAAR", "SAWMILL", "TANNERY", "CHAPEL", "STUDIO", "ARCADE", "BISTRO", "CLINIC", "DEPOT",
         "FORGE", "HOSTEL", "KENNEL", "LODGE", "MINT", "OBSERVATORY", "PANTRY", "REFINERY", "SMITHY", "WINERY")
OTHER_PLACES = ("moor", "savanna", "steppe", "gorge", "cove", "heath", "reef", "dune", "crag", "bog", "mesa",
                "grotto", "isthmus", "knoll", "spit", "strait", "tarn", "wadi", "butte", "sound")
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "LiberationSans-Regular.ttf",
              "LiberationSerif-Regular.ttf", "LiberationMono-Regular.ttf", "DejaVuSans-Bold.ttf")
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation")


def fonts() -> list[str]:
    """The font files found on this machine (empty: Pillow's built-in font is used)."""
    return [str(Path(d) / f) for d in FONT_DIRS for f in FONT_FILES if (Path(d) / f).is_file()]


def _font(rng: random.Random, px: int):
    files = fonts()
    if files:
        return ImageFont.truetype(rng.choice(files), px)
    return ImageFont.load_default(size=px)


def render_text_panel(lines: list[str], rng: random.Random, px: int, angle: float) -> Image.Image:
    """An RGBA panel (a light card with dark text, ``px`` high letters), turned by ``angle`` degrees."""
    font = _font(rng, px)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [draw.textbbox((0, 0), t, font=font) for t in lines]
    w = max(b[2] - b[0] for b in boxes) + px
    h = sum(b[3] - b[1] for b in boxes) + int(px * 0.6) * len(lines) + px // 2
    card = rng.choice([(250, 250, 245), (255, 255, 255), (245, 240, 220), (230, 240, 250)])
    ink = rng.choice([(10, 10, 10), (20, 20, 90), (90, 10, 10)])
    panel = Image.new("RGBA", (w, h), (*card, 255))
    d = ImageDraw.Draw(panel)
    y = px // 4
    for t, b in zip(lines, boxes):
        d.text((px // 2 - b[0], y - b[1]), t, font=font, fill=ink)
        y += b[3] - b[1] + int(px * 0.6)
    return panel.rotate(angle, expand=True, resample=Image.BICUBIC)


def draw_picture(shape: str, color: str, lines: list[str] | None, rng: random.Random, size: int = 224,
                 px: int = 18, angle: float = 0.0, noise: float = 0.0) -> tuple[Image.Image, float]:
    """A drawn shape (upper part of the picture) with an optional text panel (lower part), plus pixel noise ->
    (the picture, the letters' height in pixels after the panel was fitted to the picture)."""
    bg = rng.choice(BACKGROUNDS[:2])
    img = draw_shape(shape, COLORS[color], size, scale=0.5, offset=(rng.uniform(-0.12, 0.12), -0.15), background=bg)
    shown = float(px)
    if lines:
        panel = render_text_panel(lines, rng, px, angle)
        if panel.width > size - 8:
            shown = px * (size - 8) / panel.width
            panel = panel.resize((size - 8, max(1, panel.height * (size - 8) // panel.width)), Image.LANCZOS)
        x = rng.randrange(0, max(1, size - panel.width))
        y = max(0, size - panel.height - rng.randrange(2, 10))
        img.paste(panel, (x, y), panel)
    if noise > 0:
        jitter = np.random.default_rng(rng.randrange(1 << 30)).normal(0, noise, (size, size, 3))
        arr = np.asarray(img, np.float32) + jitter
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img, shown


def _receipt(total: str, rng: random.Random) -> list[str]:
    shop = rng.choice(["CORNER SHOP", "FRESH FOODS", "CITY STORE", "MINI MART"])
    return [shop, f"ITEMS {rng.randint(2, 9)}", f"TOTAL {total}"]


def make_words_set(folder: str | Path, n_queries: int = 12, size: int = 224, seed: int = 0) -> dict:
    """Write the pictures, ``manifest.csv`` (path, caption) and ``queries.jsonl`` (query, relevant, kind) into
    ``folder``; returns {"items": [...], "queries": [...], "manifest": path, "queries_path": path}.

    ``n_queries`` per kind (at most 20 for the word kinds). Each item dict has path, shape, color, lines (the text
    drawn, [] for none), px (the letters' height as drawn, in pixels), caption."""
    rng = random.Random(seed)
    folder = Path(folder)
    (folder / "pictures").mkdir(parents=True, exist_ok=True)
    items: list[dict] = []
    queries: list[dict] = []
    n_word = min(n_queries, len(SIGNS))

    def add(lines, shape=None, color=None, name=None, caption=None) -> str:
        shape = shape or rng.choice(SHAPES)
        color = color or rng.choice(list(COLORS))
        px, angle = rng.randint(12, 28), rng.uniform(-8, 8) if rng.random() < 0.5 else 0.0
        img, px = draw_picture(shape, color, lines, rng, size, px, angle, noise=rng.choice([0.0, 4.0, 8.0]))
        rel = f"pictures/{name or f'img_{len(items):04d}'}.png"
        img.save(folder / rel)
        items.append({"path": rel, "shape": shape, "color": color, "lines": lines or [], "px": round(px, 1),
                      "caption": caption})
        return rel

    def label_lines(i: int) -> tuple[list[str], str]:  # a sign, a receipt or a product code
        kind = i % 3
        if kind == 0:
            return [SIGNS[i]], SIGNS[i].lower()
        if kind == 1:
            total = f"{rng.randint(10, 99)}.{rng.randint(10, 99)}"
            return _receipt(total, rng), f"total {total}"
        code = f"{rng.choice('ABKQXZ')}{rng.choice('RTVWY')}-{rng.randint(1000, 9999)}"
        return ["CODE", code], code.lower()

    for i in range(n_word):  # ocr: the words are only in the picture; look-alikes carry other words
        lines, query = label_lines(i)
        target = add(lines)
        if query.startswith("total "):
            a, b = query.split()[1].split(".")
            for alt in (f"{b}.{a}", f"{a}.{b[::-1]}"):  # the same digits in another order
                if alt != query.split()[1]:
                    add(_receipt(alt, rng))
        elif i % 3 == 0:
            add([DECOYS[i]])
        else:  # the same letters, the same digits in another order (XV-8807 -> XV-8078)
            letters, digits = query.upper().split("-")
            turned = digits[1:] + digits[0] if len(set(digits)) > 1 else str(int(digits) % 9000 + 1000)
            add(["CODE", f"{letters}-{turned}"])
        queries.append({"query": query, "relevant": [target], "kind": "ocr"})
    for i in range(n_word):  # meta: the words are in the file name or the caption only
        place = PLACES[i]
        if i % 2:
            target = add(None, name=f"trip_{place}_{i:02d}")
        else:
            target = add(None, caption=f"holiday photo, the {place} at dusk")
        add(None, name=f"trip_{OTHER_PLACES[i]}_{i + 50:02d}")  # a look-alike with another name
        queries.append({"query": place, "relevant": [target], "kind": "meta"})
    pairs = [(s, c) for s in SHAPES for c in COLORS]
    rng.shuffle(pairs)
    for shape, color in pairs[:n_queries]:  # visual: what the drawing shows, in no words
        rel = [add(None, shape, color) for _ in range(2)]
        queries.append({"query": f"a {color} {shape}", "relevant": rel, "kind": "visual"})
    for i, (shape, color) in enumerate(pairs[:n_word]):  # mixed: the right words on the right drawing
        word = MIXED[i]
        target = add([f"{word} {i}"], shape, color)
        other = next(s for s in SHAPES if s != shape)
        add([f"{word} {i}"], other, rng.choice([c for c in COLORS if c != color]))  # right words, wrong drawing
        add([DECOYS[(i + 10) % len(DECOYS)]], shape, color)  # right drawing, wrong words
        queries.append({"query": f"a {color} {shape} {word.lower()} {i}", "relevant": [target], "kind": "mixed"})
    for j in range(n_queries * 2):  # filler: plain drawings and signs nobody asks for
        add(["OPEN"] if j % 3 == 0 else None)
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption"])
        for it in items:
            w.writerow([it["path"], it["caption"] or ""])
    qpath = folder / "queries.jsonl"
    qpath.write_text("".join(json.dumps(q) + "\n" for q in queries))
    return {"items": items, "queries": queries, "manifest": str(manifest), "queries_path": str(qpath)}


def make_receipts(folder: str | Path, n: int = 6, seed: int = 0) -> list[dict]:
    """``n`` receipts (a shop, an item count, a total, over a drawn shape) as ``folder/receipt_<i>.png``; two of them
    share a total's digits in another order. Returns [{"path", "total"}] (the demo finds one by its total)."""
    rng = random.Random(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    totals = [f"{rng.randint(10, 99)}.{rng.randint(10, 99)}" for _ in range(n)]
    if n > 1:
        a, b = totals[0].split(".")
        totals[1] = f"{b}.{a}"
    out = []
    for i, total in enumerate(totals):
        img, _ = draw_picture(rng.choice(SHAPES), rng.choice(list(COLORS)), _receipt(total, rng), rng, 224, px=18)
        path = folder / f"receipt_{i}.png"
        img.save(path)
        out.append({"path": str(path), "total": total})
    return out

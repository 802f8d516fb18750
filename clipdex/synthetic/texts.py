"""Generated text corpora: captions of the drawn shapes as plain-text notes, JSONL, CSV and Parquet, and a text
longer than CLIP's 77-token context. Deterministic (a seed picks the captions); nothing is downloaded."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clipdex.synthetic.shapes import COLORS, SHAPES

PLACES = ("on white paper", "next to a window", "in a small box", "under a lamp", "on a wooden table")


def captions(n: int, seed: int = 0) -> list[str]:
    """``n`` captions like "a red circle on white paper", drawn from the shapes' colours, shapes and a few places."""
    rng = random.Random(seed)
    return [f"a {rng.choice(list(COLORS))} {rng.choice(SHAPES)} {rng.choice(PLACES)}" for _ in range(n)]


def long_text(n_words: int = 300, seed: int = 0) -> str:
    """A text of ``n_words`` words (past CLIP's 77 tokens for n_words >= 80): captions run together."""
    words = " ".join(captions(n_words // 4 + 1, seed)).split()
    return " ".join(words[:n_words])


def make_text_files(folder: str | Path, seed: int = 0, column: str = "body") -> dict[str, str]:
    """Under ``folder``: ``notes/`` (a .txt and a .md, paragraphs separated by blank lines), ``posts.jsonl``,
    ``reviews.csv`` and ``data.parquet`` (6 rows each, the text in ``column`` beside an ``id``), and
    ``long_description.txt`` (300 words). Returns {name: path}."""
    folder = Path(folder)
    (folder / "notes").mkdir(parents=True, exist_ok=True)
    texts = captions(30, seed)
    (folder / "notes" / "shapes.txt").write_text("\n\n".join(texts[:4]) + "\n")
    (folder / "notes" / "more.md").write_text("# Shapes\n\n" + "\n\n".join(texts[4:6]) + "\n")
    rows = [{"id": i, column: t} for i, t in enumerate(texts[6:12])]
    with open(folder / "posts.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(folder / "reviews.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["id", column])
        w.writeheader()
        w.writerows({"id": i, column: t} for i, t in enumerate(texts[12:18]))
    pq.write_table(pa.table({"id": list(range(6)), column: texts[18:24]}), folder / "data.parquet")
    (folder / "long_description.txt").write_text(long_text(300, seed) + "\n")
    names = ("notes", "posts.jsonl", "reviews.csv", "data.parquet", "long_description.txt")
    return {n: str(folder / n) for n in names}

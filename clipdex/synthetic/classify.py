"""Files for classification (the classify tests and the classification notebook): drawn shapes as a captioned
support set with a CSV manifest, test images with a labels CSV, a few shots per class, and a classes file.

The class of every image is its shape; the caption names its colour and shape ("a red circle").
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from clipdex.synthetic.shapes import SHAPES, make_shapes

CLASSES = list(SHAPES)


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make_classify_files(root: str | Path, test_dir: str = "test") -> dict:
    """Under ``root``: ``support/`` (48 images, seed 1) listed in ``support.csv`` (path, caption, label; paths
    relative to ``root``), ``<test_dir>/`` (24 images, seed 2) labelled in ``labels.csv`` (path, label), ``shots/``
    (2 per class, seed 3) and ``classes.txt`` (one class a line).

    Returns the paths (root, support_dir, support_csv, test, labels, shots, classes) and the drawn items
    (support_items, test_items: dicts with path, shape, color, caption).
    """
    root = Path(root)
    support = make_shapes(root / "support", per_pair=2, size=64, seed=1)
    _write_csv(root / "support.csv", ["path", "caption", "label"],
               [[os.path.relpath(r["path"], root), r["caption"], r["shape"]] for r in support])
    test = make_shapes(root / test_dir, per_pair=1, size=64, seed=2)
    _write_csv(root / "labels.csv", ["path", "label"], [[os.path.relpath(r["path"], root), r["shape"]] for r in test])
    make_shapes(root / "shots", per_pair=1, size=64, seed=3, colors=["red", "blue"])
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return dict(root=root, support_dir=str(root / "support"), support_csv=str(root / "support.csv"),
                test=str(root / test_dir), labels=str(root / "labels.csv"), shots=str(root / "shots"),
                classes=str(root / "classes.txt"), support_items=support, test_items=test)

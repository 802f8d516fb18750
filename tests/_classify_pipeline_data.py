"""Generated inputs for the classification pipeline tests: drawn shapes, a captioned support index, shots."""
from __future__ import annotations

import csv
import os
from pathlib import Path

CLASSES = ["circle", "square", "triangle", "star"]
_BUILT: dict = {}


def shared(tmp_path_factory) -> dict:
    """:func:`build` once per test session (the pipeline and CLI tests share it; tests must not modify it)."""
    if "data" not in _BUILT:
        _BUILT["data"] = build(tmp_path_factory.mktemp("classify"))
    return _BUILT["data"]


def build(root: Path) -> dict:
    """support index from a CSV manifest with captions (48 images), a caption-less index, test images with a
    labels CSV (24), shots (2 per class) and a classes file. Returns their paths."""
    from indexers.images import ImageIndexOptions, index_images
    from indexers.samples import make_shapes
    from retrieval.io.sources import discover
    from retrieval.index.directory import create_index

    root = Path(root)
    sup = make_shapes(root / "support", per_pair=2, size=64, seed=1)
    manifest = root / "support.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption", "label"])
        for r in sup:
            w.writerow([os.path.relpath(r["path"], root), r["caption"], r["shape"]])
    opts = ImageIndexOptions(workers=0, optimize=False)
    with create_index(root / "support.clipdex", model="clipdex-tiny") as ix:
        index_images(ix, discover([str(manifest)]), opts)
    with create_index(root / "plain.clipdex", model="clipdex-tiny") as ix:
        index_images(ix, discover([str(root / "support" / "circle"), str(root / "support" / "star")]), opts)
    test = make_shapes(root / "test", per_pair=1, size=64, seed=2)
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for r in test:
            w.writerow([os.path.relpath(r["path"], root), r["shape"]])
    make_shapes(root / "shots", per_pair=1, size=64, seed=3, colors=["red", "blue"])
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return dict(root=root, support=str(root / "support.clipdex"), plain=str(root / "plain.clipdex"),
                test=str(root / "test"), labels=str(labels), shots=str(root / "shots"),
                classes=str(root / "classes.txt"), test_items=test)

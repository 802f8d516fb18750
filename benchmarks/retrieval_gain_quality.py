"""How good is the retrieval each augmentation method relies on (``benchmarks/retrieval_gain.py``)?

For a test set of the gains world and the corpus index, the share of retrieved items whose picture shows the right
class (a corpus picture "shows" a class when one of its objects has that shape):

- ``susx_support``: the SuS-LC support set (text -> image, 100 per class), each image against its class label;
- ``xmore_captions``: X-MoRe's 16 captions per test image (image -> image, deduplicated, re-ranked), the picture
  each caption belongs to against the test image's class; ``xmore_names_class``: the share of those captions that
  name the class;
- ``reco_images``: RECO's 10 image -> image neighbours of each test image;
- ``reco_texts``: the pictures of RECO's 10 text -> text neighbours of each class prompt;
- ``susx_support_style``: the share of the support set drawn in a style of the test set (a shift style for
  ``shifted``, ``plain`` for the others); ``xmore_captions_style``: the share of X-MoRe's captions whose picture is
  drawn in the test image's own style;
- ``zeroshot``: zero-shot accuracy on the same encoding, for comparison (retrieval that is right less often than
  zero-shot cannot help it much).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from clipdex.synthetic.gains import eval_scenes
from retrieval.algorithms.zeroshot import build_text_classifier, get_templates
from retrieval.classify.inputs import encode_images, load_labelled
from retrieval.classify.support import CAPTIONED, TABLE, caption_neighbours, sus_lc_support
from retrieval.index.directory import open_index


def _shapes_by_id(ix, data: dict) -> tuple[dict, dict, dict]:
    """Corpus row id -> set of shapes in its picture, -> caption, and -> style."""
    rows = data["corpus_rows"]
    by_name = {Path(r[0]).name: i for i, r in enumerate(csv.reader(open(data["corpus"]))) if i}  # header skipped
    shapes, captions, styles = {}, {}, {}
    for batch in ix.store.scan(TABLE, ["id", "path", "caption"]):
        for i, p, c in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), batch.column(2).to_pylist()):
            row = rows[by_name[Path(p).name] - 1]
            shapes[i], captions[i], styles[i] = set(row["shapes"]), c or "", row["style"]
    return shapes, captions, styles


def retrieval_quality(index: str | Path, data: dict, name: str) -> dict:
    with open_index(str(index)) as ix:
        enc = ix.encoder(device="cpu")
        classes = Path(data["classes"]).read_text().split()
        shapes, captions, styles = _shapes_by_id(ix, data)
        split = load_labelled(data[name], classes, "set")
        drawn = eval_scenes(name, int(max(Path(p).stem for p in split.paths)) + 1)  # the set's (scene, style)s
        test_style = [drawn[int(Path(p).stem)][1] for p in split.paths]
        feats, _ = encode_images(enc, split.paths)
        y = np.asarray(split.labels)
        W = build_text_classifier(classes, get_templates("openai80"), enc.encode_texts)
        s = sus_lc_support(ix, enc, classes, [[f"A photo of a {c}."] for c in classes], 100)
        cap = caption_neighbours(ix, feats, 16, 128)
        _, img = ix.search_vectors(TABLE, feats, 10, where=CAPTIONED)
        _, txt = ix.search_vectors(TABLE, W.T, 10, column="text_vector")

        def right(ids: np.ndarray, labels: np.ndarray) -> float:
            ok = [classes[c] in shapes[int(i)] for row, c in zip(ids, labels) for i in np.atleast_1d(row) if i >= 0]
            return round(float(np.mean(ok)), 3)

        names = [classes[c] in captions[int(i)] for row, c in zip(cap, y) for i in row if i >= 0]
        set_styles = set(test_style)
        same_style = [styles[int(i)] == st for row, st in zip(cap, test_style) for i in row if i >= 0]
        return {"zeroshot": round(float(np.mean(np.argmax(feats @ W, 1) == y)), 3),
                "susx_support": right(s.ids, s.labels), "xmore_captions": right(cap, y),
                "susx_support_style": round(float(np.mean([styles[int(i)] in set_styles for i in s.ids])), 3),
                "xmore_captions_style": round(float(np.mean(same_style)), 3),
                "xmore_names_class": round(float(np.mean(names)), 3), "reco_images": right(img, y),
                "reco_texts": right(txt, np.arange(len(classes)))}

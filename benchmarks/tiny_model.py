"""What clipdex-tiny knows, on held-out drawings: retrieval recall and zero-shot accuracy.

    python benchmarks/tiny_model.py [--model clipdex-tiny] [--n 1000] [--out benchmarks/results]

Every gallery is drawn from seeds the training never used (training draws seed 0's pool; these use seeds 101-104).
Figures (written to <out>/tiny_model.json):

- ``clean``: 1,000 single-object drawings of every colour-shape pair the training saw. Text-to-image recall@1/5
  for the caption "a {colour} {shape}" of every image (a hit: a top-k image of that colour and shape), the same for
  "a {size} {colour} {shape} {position}" (a hit must match all four), and zero-shot accuracy for shape (openai80
  templates, as ``clipdex classify`` uses) and for colour ("a {colour} shape").
- ``held_out_pairs``: the same on 1,000 drawings of the colour-shape pairs never drawn in training
  (``held_out_pairs()``), queried in a gallery where they are mixed with as many seen pairs.
- ``style_shift``: outline-only drawings on noisy backgrounds, with clean rendering (no blur, no JPEG).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

from clipdex.synthetic.world import COLORS, SHAPES, held_out_pairs, render_scene, sample_scene  # noqa: E402
from retrieval.algorithms.zeroshot import build_text_classifier, get_templates  # noqa: E402
from retrieval.encode.encoder import load_encoder  # noqa: E402


def draw(n: int, seed: int, pairs=None, clean: bool = False, **fixed) -> tuple[list[dict], list]:
    """``n`` single-object scenes (colour-shape pairs from ``pairs`` when given) and their 64 px pictures."""
    rng = random.Random(seed)
    scenes = []
    for i in range(n):
        extra = dict(fixed)
        if pairs:
            extra["color"], extra["shape"] = pairs[i % len(pairs)]
        scenes.append(sample_scene(rng, n_objects=1, **extra))
    return scenes, [render_scene(s, 64, seed * 100003 + i, clean=clean) for i, s in enumerate(scenes)]


def recall(encoder, img_vecs, scenes, keys, phrase, ks=(1, 5), query_mask=None) -> dict:
    """Text-to-image recall@k: the query of image i is ``phrase(obj)``; a hit is a top-k image with the same
    ``keys`` attributes. Queries are deduplicated (one per distinct phrase)."""
    objs = [s["objects"][0] for s in scenes]
    label = [tuple(o[k] for k in keys) for o in objs]
    queries = {}
    for i, o in enumerate(objs):
        if query_mask is None or query_mask[i]:
            queries.setdefault(phrase(o), label[i])
    texts = list(queries)
    q = encoder.encode_texts(texts)
    order = np.argsort(-(q @ img_vecs.T), axis=1)
    out = {}
    for k in ks:
        out[f"recall@{k}"] = round(float(np.mean([any(label[j] == queries[t] for j in order[r, :k])
                                                  for r, t in enumerate(texts)])), 4)
    out["precision@5"] = round(float(np.mean([np.mean([label[j] == queries[t] for j in order[r, :5]])
                                              for r, t in enumerate(texts)])), 4)
    out["queries"] = len(texts)
    return out


def zero_shot(encoder, img_vecs, scenes, key: str, names, templates) -> float:
    """Top-1 accuracy of a prompt-ensemble zero-shot classifier over ``names`` for attribute ``key``."""
    W = build_text_classifier(list(names), templates, encoder.encode_texts)
    pred = np.argmax(img_vecs @ W, axis=1)
    truth = np.array([list(names).index(s["objects"][0][key]) for s in scenes])
    return round(float(np.mean(pred == truth)), 4)


def evaluate(encoder, scenes, images, query_mask=None) -> dict:
    vecs = encoder.encode_images(images)
    simple = lambda o: f"a {o['color']} {o['shape']}"  # noqa: E731
    full = lambda o: f"a {o['size']} {o['color']} {o['shape']} {_where(o['position'])}"  # noqa: E731
    return {"images": len(images),
            "color_shape": recall(encoder, vecs, scenes, ("color", "shape"), simple, query_mask=query_mask),
            "size_color_shape_position": recall(encoder, vecs, scenes, ("size", "color", "shape", "position"), full,
                                                query_mask=query_mask),
            "zero_shot_shape": zero_shot(encoder, vecs, scenes, "shape", SHAPES, get_templates("openai80")),
            "zero_shot_color": zero_shot(encoder, vecs, scenes, "color", list(COLORS), ["a {} shape"])}


def _where(position: str) -> str:
    return "in the center" if position == "center" else (f"on the {position}" if position in ("left", "right")
                                                         else f"at the {position}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="clipdex-tiny")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = p.parse_args(argv)
    t0 = time.time()
    encoder = load_encoder(a.model, device="cpu")
    held = held_out_pairs()
    seen = [(c, s) for s in SHAPES for c in COLORS if (c, s) not in held]
    result = {"model": str(encoder.spec), "held_out_pairs": [f"{c} {s}" for c, s in held]}
    scenes, images = draw(a.n, 101, seen)
    result["clean"] = evaluate(encoder, scenes, images)
    s_held, i_held = draw(a.n // 2, 102, held)
    s_seen, i_seen = draw(a.n - a.n // 2, 103, seen)
    mask = [True] * len(s_held) + [False] * len(s_seen)
    result["held_out_pairs_gallery"] = evaluate(encoder, s_held + s_seen, i_held + i_seen, query_mask=mask)
    held_only = evaluate(encoder, s_held, i_held)
    result["held_out_pairs_gallery"]["zero_shot_shape"] = held_only["zero_shot_shape"]
    result["held_out_pairs_gallery"]["zero_shot_color"] = held_only["zero_shot_color"]
    scenes, images = draw(a.n, 104, seen, clean=True, style="outline", background="noise")
    result["style_shift"] = evaluate(encoder, scenes, images)
    result["seconds"] = round(time.time() - t0)
    save_result(result, Path(a.out) / "tiny_model.json")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Ready-made sets of the generated world for the semantic tests, the notebooks and the benchmarks: a gallery of
drawings named for what they show, long descriptions that differ only after CLIP's 77 tokens, videos with events
at known times, and a classification corpus with a style-shifted test set. Seeded; nothing is downloaded."""
from __future__ import annotations

import copy
import csv
import os
import random
from pathlib import Path

from clipdex.synthetic.world import SHAPES, make_object, render_scene, sample_scene
from clipdex.synthetic.world_text import caption, description
from clipdex.synthetic.world_video import make_world_video, track, world_video


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make_gallery(folder: str | Path, colors, shapes, per_pair: int = 5, seed: int = 0, size: int = 64,
                 clean: bool = False, **fixed) -> list[dict]:
    """``per_pair`` single-object drawings of every (colour, shape) into ``folder/<shape>/<colour>_<i>.png``.
    ``fixed`` fixes other attributes (``style="outline"``, ``background="noise"``, ...). Returns one dict per image:
    path, shape, color, caption ("a red circle"), scene."""
    rng = random.Random(seed)
    folder = Path(folder)
    out = []
    for shape in shapes:
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for color in colors:
            for i in range(per_pair):
                scene = sample_scene(rng, n_objects=1, shape=shape, color=color, **fixed)
                path = folder / shape / f"{color}_{i}.png"
                render_scene(scene, size, rng.randrange(1 << 30), clean=clean).save(path)
                out.append({"path": str(path), "shape": shape, "color": color, "caption": f"a {color} {shape}",
                            "scene": scene})
    return out


def make_long_text_scenes(folder: str | Path, thirds=(("red", "star"), ("blue", "heart"), ("green", "cross"),
                                                      ("yellow", "hexagon")), seed: int = 0) -> list[dict]:
    """Scenes that share their first two objects and background and differ only in a third object (one per entry
    of ``thirds``), drawn into ``folder/scene_<colour>_<shape>.png``, each with a long description made with the
    same random choices, so that the descriptions agree up to where the third object is named (past token 77).
    Returns dicts: path, third ("red star"), description."""
    rng = random.Random(seed)
    base = sample_scene(rng, n_objects=2, shape="square", color="purple", position="left", style="filled")
    base["objects"][1] = make_object("circle", "orange", rng, "small", "top", "filled", crowded=True)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for color, shape in thirds:
        scene = copy.deepcopy(base)
        scene["objects"].append(make_object(shape, color, random.Random(seed + 1), "large", "bottom", "filled",
                                            crowded=True))
        path = folder / f"scene_{color}_{shape}.png"
        render_scene(scene, 64, seed, clean=True).save(path)
        out.append({"path": str(path), "third": f"{color} {shape}",
                    "description": description(scene, random.Random(seed + 2))})
    return out


def make_event_videos(folder: str | Path, seed: int = 0) -> list[dict]:
    """Three 10-second videos (4 fps, 64 px): ``star.mp4``, where a small red star appears at the top at 6 s and
    leaves at 8 s while a small blue square moves from left to right below it (as in the world, objects never
    overlap); ``recolor.mp4``, a green circle that turns yellow at 5 s;
    ``heart.mp4``, a purple heart moving from top to bottom. Each dict has its ``path`` and, where it has one,
    its event window ``event`` = (start, end)."""
    folder = Path(folder)
    videos = [
        ("star.mp4", [track("square", "blue", 0, 10, "left", to="right", size="small", seed=seed),  # small: the
                      track("star", "red", 6, 8, "top", size="small", seed=seed + 1)], (6.0, 8.0)),  # two never touch
        ("recolor.mp4", [track("circle", "green", 0, 10, "center", recolor="yellow", recolor_at=5, seed=seed + 2)],
         (5.0, 10.0)),
        ("heart.mp4", [track("heart", "purple", 0, 10, "top", to="bottom", seed=seed + 3)], None),
    ]
    out = []
    for i, (name, tracks, event) in enumerate(videos):
        v = make_world_video(folder / name, world_video(tracks, 10.0, fps=4, seed=seed + 10 + i))
        out.append({**v, "event": event})
    return out


def make_world_classify_files(root: str | Path, seed: int = 0, shapes=SHAPES) -> dict:
    """A classification corpus of the world, the class of an image being its shape. Under ``root``:

    - ``support/`` captioned drawings (every shape x 6 colours x 2, varied styles and backgrounds), listed in
      ``support.csv`` (path, caption, label; paths relative to ``root``);
    - ``clean/`` filled drawings on plain backgrounds (every shape x 4 colours x 2), labelled in ``clean.csv``;
    - ``shifted/`` a style shift: outlines on noisy backgrounds in colours the support set does not use
      (every shape x 4 colours x 2), labelled in ``shifted.csv``;
    - ``shots/<shape>/`` 4 shifted-style drawings per class (other seeds); ``classes.txt``.
    """
    root = Path(root)
    rng = random.Random(seed)
    support = make_gallery(root / "support", ("red", "blue", "green", "yellow", "black", "orange"), shapes, 2,
                           seed + 1)
    _write_csv(root / "support.csv", ["path", "caption", "label"],
               [[os.path.relpath(r["path"], root), caption(r["scene"], rng), r["shape"]] for r in support])
    labelled = {}
    galleries = (("clean", ("red", "blue", "green", "purple"), {"style": "filled", "background": "plain"}),
                 ("shifted", ("pink", "brown", "gray", "white"), {"style": "outline", "background": "noise"}))
    for name, colors, kw in galleries:
        items = make_gallery(root / name, colors, shapes, 2, seed + 2 + len(labelled), **kw)
        _write_csv(root / f"{name}.csv", ["path", "label"], [[os.path.relpath(r["path"], root), r["shape"]]
                                                             for r in items])
        labelled[name] = items
    for shape in shapes:
        make_gallery(root / "shots", ("pink", "gray"), (shape,), 2, seed + 7 + SHAPES.index(shape),
                     style="outline", background="noise")
    (root / "classes.txt").write_text("\n".join(shapes) + "\n")
    return {"root": root, "support_csv": str(root / "support.csv"), "clean": str(root / "clean"),
            "clean_labels": str(root / "clean.csv"), "shifted": str(root / "shifted"),
            "shifted_labels": str(root / "shifted.csv"), "shots": str(root / "shots"),
            "classes": str(root / "classes.txt"), "support_items": support, **{f"{k}_items": v
                                                                               for k, v in labelled.items()}}

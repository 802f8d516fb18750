"""Classification evaluation (CLIP_benchmark-style): top-1/top-5 accuracy of each method on a labelled set.

A labelled set is a folder with one sub-folder per class (named like the class; ``_`` stands for a space) or a
manifest (CSV, JSONL, Parquet) with ``path`` and ``label`` columns. Every label must name a class: a set whose
labels and classes disagree is refused rather than scored on the part that happens to match.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from retrieval.classify.inputs import check_classes, load_labelled, read_labels
from retrieval.classify.pipeline import ClassificationRun
from retrieval.classify.prepare import ClassifyOptions
from retrieval.classify.support import classifier_model
from retrieval.encode.encoder import load_encoder
from retrieval.errors import InvalidInput
from retrieval.io.workers import Progress


def check_labels_name_classes(source: str, classes: Sequence[str]) -> None:
    """Refuse (``InvalidInput``) a labelled set with a class folder or a label that names none of ``classes``."""
    src = Path(source).expanduser()
    if src.is_dir():
        named = {p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")}
    else:
        named = set(read_labels(src).values()) if src.is_file() else set()
    unknown = sorted(named - set(classes) - {c.replace(" ", "_") for c in classes})
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        shown = ", ".join(list(classes)[:8]) + (", ..." if len(classes) > 8 else "")
        raise InvalidInput(f"{source}: label {unknown[0]!r} names no class{more}; the classes are {shown}")


def evaluate_classification(source: str, classes: Sequence[str], options: ClassifyOptions | None = None,
                            model: str | None = None, device: str | None = None,
                            on_progress: Callable[[Progress], None] | None = None) -> dict:
    """Classify every image of the labelled set ``source`` with the methods of ``options`` and score them.

    ``model``: the model to load (default: the support index's, else the default model); it is loaded once the
    set and its labels have been checked. Returns ``{"images": n, "accuracy": {method: {n, top1, top5 (percent),
    confused: [[true, predicted, count], ...]}}}``.
    """
    classes = check_classes(classes)
    options = options or ClassifyOptions()
    check_labels_name_classes(source, classes)
    split = load_labelled(source, classes, what="labelled set")
    encoder = load_encoder(classifier_model(model, options.support), device=device)
    labels = {p: classes[i] for p, i in zip(split.paths, split.labels)}
    with ClassificationRun(classes, options, encoder, on_progress) as run:
        for _ in run.predict(split.paths, labels):
            pass
        return {"images": len(split.paths), "accuracy": run.evaluation.summary()}


__all__ = ["check_labels_name_classes", "evaluate_classification"]

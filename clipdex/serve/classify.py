"""``POST /api/classify``: one image, class names, a method and optionally a served index as support set.

The classification run (text classifier, support set, tuned parameters) is prepared once per (model, classes,
method, support) and kept for the next requests (a few at most); few-shot methods need labelled shots on disk and
are left to ``clipdex classify``. A request is bounded before any work (``check_work``): the number of classes, the
length of each name, and the prompts its classifier would encode (classes x templates, a long name counting once
per 64 bytes of UTF-8, since it spans more tokens); the service's query timeout bounds the rest.
"""
from __future__ import annotations

import functools
import threading
from collections import OrderedDict

import numpy as np

from clipdex.serve.config import ServeConfig
from clipdex.serve.queries import TooLarge
from clipdex.serve.registry import ServedIndex
from retrieval.algorithms.zeroshot import get_templates
from retrieval.classify.pipeline import ClassificationRun, ClassifyOptions
from retrieval.errors import InvalidInput

KEEP = 4
NAME_BYTES = 64   # UTF-8 bytes of a class name that count as one more prompt per template (a token is >= 1 byte)
_runs: OrderedDict = OrderedDict()
_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def n_templates() -> int:
    """Prompt templates per class of the classifier the service builds (ClassifyOptions' default set)."""
    return len(get_templates(ClassifyOptions().templates))


def prompt_work(classes: list[str], templates: int) -> int:
    """Prompts a classifier over ``classes`` encodes, a long name counting once more per ``NAME_BYTES`` bytes."""
    return templates * sum(1 + len(c.encode("utf-8", "replace")) // NAME_BYTES for c in classes)


def check_work(classes: list[str], config: ServeConfig) -> None:
    """Refuse (413) a classification over the service's limits, before any work."""
    if len(classes) > config.max_classes:
        raise TooLarge(f"too many classes: {len(classes):,} (at most {config.max_classes:,} per request)")
    longest = max(classes, key=len, default="")
    if len(longest) > config.max_class_chars:
        raise TooLarge(f"class name of {len(longest):,} characters (at most {config.max_class_chars:,}): "
                       f"{longest[:40]!r}...")
    work = prompt_work(classes, n_templates())
    if work > config.max_prompts:
        raise TooLarge(f"these classes need {work:,} prompt encodings (at most {config.max_prompts:,}): give fewer or "
                       "shorter class names")


def _run_for(served: ServedIndex, classes: tuple[str, ...], method: str, support) -> ClassificationRun:
    key = (served.index.model, classes, method, str(support))
    with _lock:
        if key in _runs:
            _runs.move_to_end(key)
            return _runs[key]
        run = ClassificationRun(list(classes), ClassifyOptions(methods=(method,), support=support and str(support)),
                                served.encoder)
        _runs[key] = run
        while len(_runs) > KEEP:
            _runs.popitem(last=False)[1].close()
        return run


def classify_image(served: ServedIndex, image, classes: list[str], method: str, support, top_k: int) -> dict:
    """Blocking: -> {"method", "classes": [{"class", "probability"}...] best first}."""
    if not served.has_model:
        raise InvalidInput(f"index {served.name!r} has no model to encode the image with")
    if method == "all":
        raise InvalidInput("name one method")
    run = _run_for(served, tuple(classes), method, support)
    feats = served.encoder.encode_images([image])
    for _, probs in run.predict_features(np.ascontiguousarray(feats, np.float32)):
        out = {}
        for name, p in probs.items():
            order = np.argsort(-p[0], kind="stable")[:top_k]
            out[name] = [{"class": run.classes[i], "probability": float(p[0][i])} for i in order]
        return {"method": method, "classes": out.get(method) or next(iter(out.values())), "notes": run.notes}
    raise InvalidInput("no prediction")

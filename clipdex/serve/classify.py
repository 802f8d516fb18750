"""``POST /api/classify``: one image, class names, a method and optionally a served index as support set.

The classification run (text classifier, support set, tuned parameters) is prepared once per (model, classes,
method, support) and kept for the next requests (a few at most); few-shot methods need labelled shots on disk and
are left to ``clipdex classify``.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from clipdex.serve.registry import ServedIndex
from retrieval.classify.pipeline import ClassificationRun, ClassifyOptions
from retrieval.errors import InvalidInput

KEEP = 4
_runs: OrderedDict = OrderedDict()
_lock = threading.Lock()


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

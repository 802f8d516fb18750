"""Accuracy of a classification run, accumulated block by block: top-1, top-5 and the most confused class pairs
(``ClassificationRun.evaluation``)."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np


class Evaluation:
    """Per method: labelled count, top-1 and top-5 hits, and a Counter of (true, predicted) errors.

    ``update(method, probs (B, C), labels (B,))`` with label -1 for images without a (known) label.
    Memory is O(errors seen), never C x C.
    """

    def __init__(self, classes: Sequence[str], methods: Sequence[str]):
        self.classes = list(classes)
        self.n = {m: 0 for m in methods}
        self.top1 = {m: 0 for m in methods}
        self.top5 = {m: 0 for m in methods}
        self.confused = {m: Counter() for m in methods}

    def update(self, method: str, probs: np.ndarray, labels: np.ndarray) -> None:
        keep = labels >= 0
        if not keep.any():
            return
        p, y = probs[keep], labels[keep]
        pred = np.argmax(p, axis=1)
        k = min(5, p.shape[1])
        top = np.argpartition(-p, k - 1, axis=1)[:, :k]
        self.n[method] += int(y.size)
        self.top1[method] += int(np.sum(pred == y))
        self.top5[method] += int(np.sum(np.any(top == y[:, None], axis=1)))
        wrong = pred != y
        self.confused[method].update(zip(y[wrong].tolist(), pred[wrong].tolist()))

    @property
    def labelled(self) -> int:
        return max(self.n.values(), default=0)

    def summary(self, pairs: int = 5) -> dict:
        """``{method: {n, top1, top5 (percent), confused: [[true, predicted, count], ...]}}``."""
        out = {}
        for m, n in self.n.items():
            out[m] = dict(n=n, top1=100.0 * self.top1[m] / n if n else None,
                          top5=100.0 * self.top5[m] / n if n else None,
                          confused=[[self.classes[t], self.classes[p], c]
                                    for (t, p), c in self.confused[m].most_common(pairs)])
        return out


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``hits / n`` (95% for z = 1.96): -> (low, high) in [0, 1].

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 or n hits; n = 0 gives (0, 1)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= hits <= n:
        raise ValueError(f"hits {hits} must be between 0 and n = {n}")
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))

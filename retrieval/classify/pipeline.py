"""Classification runs: gather each method's inputs (text classifier, support sets, captions, shots), encode the
images once, and stream predictions block by block. Each step is explicit:

    run = ClassificationRun(classes, ClassifyOptions(methods=["all"], support="web.clipdex"), encoder)  # no work
    run.prepare()                                  # the methods' inputs: classifier, support sets, shots, tuning
    for pred in run.predict(paths, labels):      # encodes the images, then one Prediction per image
        ...
    run.evaluation.summary()                       # top-1/top-5 accuracy and most-confused pairs per method
    run.close()                                    # (or use the run as a context manager)

The methods come from the registry (``retrieval.classify.registry``). Memory: the test features (N · D floats) are
kept; every method works on blocks of B test rows, with B = :func:`methods.block_rows` (a 256 MiB budget for the
(B, M) work of the widest method at ~48 bytes per (row, support item) pair; e.g. M = 100,000 support items -> B =
55 rows), so nothing grows as N · M. Fixed costs: the support set (M · D float32) with its one-hot labels (M · C
float32) and log-signatures (M · C float64) for TIP-X, C · D for the classifier, N · K caption ids for X-MoRe.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from retrieval.classify import methods as M
from retrieval.classify.accuracy import Evaluation
from retrieval.classify.inputs import check_classes, encode_images
from retrieval.classify.prepare import ClassifyOptions, MethodInputs, load_fusers
from retrieval.classify.registry import ALL, resolve_methods
from retrieval.errors import InvalidInput
from retrieval.io.workers import Progress

__all__ = ["ClassificationRun", "ClassifyOptions", "Prediction", "load_fusers"]

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    path: str
    label: str | None
    top: dict = field(default_factory=dict)  # method -> [(class, probability)], best first


class ClassificationRun:
    """A classification run over ``classes`` with ``options``. Constructing it only checks the class names and
    the methods asked for; :meth:`prepare` builds each method's runner (the work: text classifier, support sets,
    shots, tuning), :meth:`encode` encodes images, :meth:`predict` streams predictions (preparing first if needed).

    ``notes`` collects what a user should be told (support set sizes, cache use, chosen hyper-parameters);
    ``on_progress(Progress)`` hears about the ``encode`` and ``classify`` stages.
    """

    def __init__(self, classes: Sequence[str], options: ClassifyOptions, encoder,
                 on_progress: Callable[[Progress], None] | None = None):
        self.classes = check_classes(classes)
        self.opts = options
        self.encoder = encoder
        self.on_progress = on_progress
        self.methods = resolve_methods(options.methods, options)
        self.inputs = MethodInputs(self.classes, options, encoder, [m for m in options.methods if m != ALL])
        self.runners: list[M.Runner] = []
        self.evaluation: Evaluation | None = None
        self.prepared = False

    @property
    def notes(self) -> list[str]:
        return self.inputs.notes

    @property
    def W(self) -> np.ndarray:
        """The zero-shot text classifier (D, C) (computed on first use)."""
        return self.inputs.W

    @property
    def ix(self):
        """The support index, once a method has opened it (else None)."""
        return self.inputs.ix

    def prepare(self) -> "ClassificationRun":
        """Build every method's runner from the inputs it needs; methods that cannot run under ``all`` are
        skipped with a warning. Returns the run."""
        if self.prepared:
            return self
        try:
            for method in self.methods:
                runner = method.build(self.inputs)
                if runner is not None:
                    self.runners.append(runner)
        except Exception:
            self.close()
            raise
        for r in self.runners:
            if r.params:
                self.notes.append(f"{r.name}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in r.params.items()))
        self.evaluation = Evaluation(self.classes, [r.name for r in self.runners])
        self.prepared = True
        return self

    def close(self) -> None:
        self.inputs.close()

    def __enter__(self) -> "ClassificationRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running -----------------------------------------------------------------------------------------------
    def encode(self, paths: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Encode every image once; unreadable ones are dropped with a warning. -> (paths kept, feats (n, D))."""
        cb = None if self.on_progress is None else (lambda d, t: self.on_progress(Progress("encode", d, t)))
        feats, errors = encode_images(self.encoder, paths, self.opts.batch_size, self.opts.workers, cb)
        if errors:
            log.warning("skipped %d unreadable images (first: %s: %s)", len(errors), *errors[0])
        ok = ~np.isnan(feats).any(1)
        if not ok.any():
            raise InvalidInput("none of the images could be read")
        return [p for p, k in zip(paths, ok) if k], np.ascontiguousarray(feats[ok])

    def predict_features(self, feats: np.ndarray) -> Iterator[tuple[slice, dict]]:
        """Blocks of ``(rows, {method: probabilities (B, C)})`` over test features (N, D) (prepared first)."""
        self.prepare()
        yield from M.stream_probs(self.runners, feats, self.opts.memory_budget)

    def predict(self, paths: Sequence[str], labels: dict | None = None) -> Iterator[Prediction]:
        """One :class:`Prediction` per readable image; labelled images also update ``self.evaluation``."""
        self.prepare()
        t0 = time.monotonic()
        paths, feats = self.encode(paths)
        labels = labels or {}
        pos = {c: i for i, c in enumerate(self.classes)}
        y = np.array([pos.get(labels.get(p), -1) for p in paths], np.int64)
        if labels:
            bad = sorted({labels[p] for p in paths if p in labels and labels[p] not in pos})
            if bad:
                log.warning("%d labels are not classes (e.g. %r); those images are left out of the accuracy",
                            len(bad), bad[0])
            unlabelled = sum(1 for p in paths if p not in labels)
            if unlabelled:
                log.warning("%d images have no label; they are left out of the accuracy", unlabelled)
        k = min(self.opts.top_k, len(self.classes))
        done = 0
        for sl, probs in self.predict_features(feats):
            tops = {}
            for name, p in probs.items():
                self.evaluation.update(name, p, y[sl])
                idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
                tops[name] = (idx, np.take_along_axis(p, idx, 1))
            for j, i in enumerate(range(sl.start, sl.stop)):
                yield Prediction(paths[i], labels.get(paths[i]),
                                 {n: [(self.classes[c], float(q)) for c, q in zip(ix[j], pr[j])]
                                  for n, (ix, pr) in tops.items()})
            done = sl.stop
            if self.on_progress is not None:
                self.on_progress(Progress("classify", done, len(paths)))
        self.elapsed = time.monotonic() - t0
        self.images_per_s = len(paths) / self.elapsed if self.elapsed > 0 else 0.0


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)

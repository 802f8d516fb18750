"""The query half of ``import clipdex``: search an index, classify images, measure both, and the encoder itself.
Each function does what its ``clipdex`` command does, with the same defaults, on the same pieces (``retrieval/``).

Search results are pyarrow Tables (``rank``, ``score`` (a cosine), ``id`` and the row's columns; ``.to_pylist()``
or ``.to_pandas()`` to read them). An ``index`` argument is an open :class:`Index` or a path (opened read-only
for the call).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence, Union

from clipdex.arguments import OnProgress, PathLike, Sources, path_list, readable, with_changes
from retrieval.classify.evaluate import evaluate_classification as run_classification_eval
from retrieval.classify.inputs import check_classes, find_images, read_classes
from retrieval.classify.pipeline import ClassificationRun, ClassifyOptions, Prediction
from retrieval.classify.registry import METHODS, resolve_methods
from retrieval.classify.support import classifier_model
from retrieval.encode.encoder import ClipEncoder, load_encoder
from retrieval.encode.text import TextEncoding, encode_long_texts, query_strategy
from retrieval.index.directory import Index
from retrieval.query.evaluate import EvalQuery, read_queries
from retrieval.query.evaluate import evaluate_retrieval as run_retrieval_eval
from retrieval.query.search import search
from retrieval.query.video import VideoSearchOptions, search_videos

log = logging.getLogger(__name__)

Classes = Union[PathLike, Sequence[str]]
Methods = Union[str, Sequence[str]]
CLASSIFY_METHODS = tuple(METHODS)  # and "all": every method the inputs allow

__all__ = ["CLASSIFY_METHODS", "ClassifyOptions", "ClipEncoder", "EvalQuery", "Prediction", "TextEncoding",
           "VideoSearchOptions", "classify", "encode_long_texts", "evaluate_classification", "evaluate_retrieval",
           "load_encoder", "search", "search_videos"]


def classify(images: Sources, classes: Classes, method: Methods | None = None, *, support: PathLike | None = None,
             shots: PathLike | None = None, model: str | None = None, device: str | None = None,
             options: ClassifyOptions | None = None, on_progress: OnProgress | None = None,
             **changes: Any) -> list[Prediction]:
    """Classify images by class names: ``clipdex classify``.

    ``images``: image files, folders or a manifest (its ``label`` column fills ``Prediction.label``).
    ``classes``: the class names, or a text file with one per line. ``method``: one of :data:`CLASSIFY_METHODS`
    (default ``"zeroshot"``), several, or ``"all"`` (every method the inputs allow). ``support``: a clipdex image
    index built with the same model (``susx``, ``xmore``, ``reco``); ``shots``: labelled few-shot images, a
    folder per class or a manifest with a ``label`` column (``tip``, ``tipx``, ``gda``, ``proker``). ``model``:
    default the support index's model, else the default model. ``changes``: fields of :class:`ClassifyOptions`
    (``templates``, ``top_k``, ``per_class``, ``tune``, ``fuser``, ...).

    Returns one :class:`Prediction` per readable image, in path order: ``path``, ``label`` and ``top``
    (``{method: [(class, probability), ...]}``, best first, ``top_k`` of them).
    """
    names = _classes(classes)
    opts = _classify_options(options, method, support, shots, changes)
    found, labels = find_images(path_list(images, "images"))
    encoder = load_encoder(classifier_model(model, opts.support), device=device)
    with ClassificationRun(names, opts, encoder, on_progress) as run:
        run.prepare()
        for note in run.notes:
            log.info("%s", note)
        return list(run.predict(found, labels))


def evaluate_classification(source: PathLike, classes: Classes, method: Methods | None = None, *,
                            support: PathLike | None = None, shots: PathLike | None = None, model: str | None = None,
                            device: str | None = None, options: ClassifyOptions | None = None,
                            on_progress: OnProgress | None = None, **changes: Any) -> dict:
    """Top-1/top-5 accuracy of each method on a labelled set: ``clipdex eval classify``.

    ``source``: a folder with a sub-folder per class, or a manifest with ``path`` and ``label`` columns; every
    label must name a class. The other arguments are :func:`classify`'s. Returns ``{"images": n, "accuracy":
    {method: {"n", "top1", "top5" (percent), "confused": [[true, predicted, count], ...]}}}``.
    """
    names = _classes(classes)
    opts = _classify_options(options, method, support, shots, changes)
    return run_classification_eval(os.fspath(source), names, opts, model, device, on_progress)


def evaluate_retrieval(index: Index | PathLike, queries: PathLike | Sequence[EvalQuery], *, table: str = "images",
                       depth: int = 100, long_text: str | None = None, device: str | None = None,
                       on_progress: OnProgress | None = None) -> dict:
    """recall@1/5/10, MRR and nDCG@10 of ``index`` on queries with known answers: ``clipdex eval retrieval``.

    ``queries``: a JSONL file (``{"query": "...", "relevant": [...]}`` or ``"image"`` instead of ``"query"``), a
    CSV file (relevant items separated by ``|``), COCO captions JSON, or :class:`EvalQuery` objects. Relevant items
    are paths (a row's path, or its end) or row ids. ``depth``: results searched per query. ``long_text``: how long
    text queries are encoded (default: the table's own strategy). Returns ``{"summary": {metric: mean, "queries":
    n}, "queries": [per-query rows]}``.
    """
    asked = read_queries(queries) if isinstance(queries, (str, os.PathLike)) else list(queries)
    with readable(index) as ix:
        return run_retrieval_eval(ix, asked, table, depth, ix.encoder(device=device),
                                  query_strategy(ix.manifest, table, long_text), on_progress=on_progress)


def _classes(classes: Classes) -> list[str]:
    """Class names from a list, or from a file of one per line."""
    if isinstance(classes, (str, os.PathLike)):
        return read_classes(classes)
    return check_classes(list(classes))


def _classify_options(given: ClassifyOptions | None, method: Methods | None, support, shots,
                      changes: dict) -> ClassifyOptions:
    """The run's options: ``given`` with the methods, support index and shots named by the caller."""
    if method is not None:
        changes["methods"] = (method,) if isinstance(method, str) else tuple(method)
    if support is not None:
        changes["support"] = os.fspath(support)
    if shots is not None:
        changes["shots"] = os.fspath(shots)
    opts = with_changes(ClassifyOptions, given, changes)
    resolve_methods(opts.methods, opts)  # unknown methods, and methods without their inputs, fail before any work
    return opts

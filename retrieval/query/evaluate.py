"""Retrieval evaluation against an index (CLIP_benchmark-style): recall@k, MRR and nDCG@10 for a set of queries
with known relevant items.

Query files (``read_queries``):

- JSON lines: one object per query, ``{"query": "a red circle", "relevant": ["img/a.png", ...]}`` or with
  ``"image": "probe.png"`` instead of ``"query"``; ``relevant`` is a path, an id, or a list of them;
- CSV: a header with ``query`` (or ``image``) and ``relevant`` (several separated by ``|``);
- COCO captions JSON (``images`` with ``id`` and ``file_name``, ``annotations`` with ``image_id`` and ``caption``):
  every caption is a text query whose relevant item is its image.

Relative query-image paths are read from the query file's folder. A relevant path matches a row whose ``path``
is the same file, or ends with it (``/`` + the relative path, as COCO's ``file_name``); in a texts table a
relevant item may also be the row's text; an integer matches a row id.
Metrics use binary relevance: ``recall@k`` is 1 when a relevant item is in the first k (CLIP_benchmark's
definition), ``mrr`` is 1 / rank of the first relevant item (0 past ``depth``), ``ndcg@10`` is DCG over the first
10 divided by the ideal DCG.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from retrieval.errors import InvalidInput
from retrieval.index.directory import Index
from retrieval.io.workers import Progress
from retrieval.query.hybrid import HybridOptions, hybrid_search
from retrieval.query.search import query_vectors

log = logging.getLogger(__name__)

KS = (1, 5, 10)


@dataclass
class EvalQuery:
    """A query (text, or image path) and its relevant items (paths or ids, as written in the query file)."""

    text: str | None
    image: str | None
    relevant: list = field(default_factory=list)
    kind: str | None = None  # a label to group the queries' metrics by (summary["kinds"])


def _relevant_list(value, where: str) -> list:
    if value is None or value == "" or value == []:
        raise InvalidInput(f"{where}: no relevant items")
    items = value if isinstance(value, list) else str(value).split("|") if isinstance(value, str) else [value]
    if any(isinstance(v, bool) or not isinstance(v, (str, int)) for v in items):
        raise InvalidInput(f"{where}: relevant items are paths (strings) or row ids (integers)")
    return [v.strip() if isinstance(v, str) else v for v in items]


def _query(obj: dict, where: str, base: Path) -> EvalQuery:
    text, image = obj.get("query") or obj.get("text"), obj.get("image")
    for name, value in (("query", text), ("image", image)):
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"{where}: '{name}' must be a string, not {type(value).__name__}")
    if bool(text) == bool(image):
        raise InvalidInput(f"{where}: give exactly one of 'query' (a text) or 'image' (a path)")
    if image and not os.path.isabs(image):
        image = str(base / image)
    kind = obj.get("kind")
    return EvalQuery(text or None, image or None, _relevant_list(obj.get("relevant"), where),
                     str(kind) if kind not in (None, "") else None)


def read_queries(path: str | os.PathLike) -> list[EvalQuery]:
    """Queries from a JSONL, CSV or COCO-captions JSON file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"query file not found: {path}")
    base = path.parent
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read query file {path}: {exc}") from exc
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and "relevant" not in rows[0]:
            raise InvalidInput(f"{path}: the CSV needs a 'relevant' column beside 'query' or 'image'")
        out = [_query(r, f"{path} row {i + 2}", base) for i, r in enumerate(rows)]
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path} is not JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise InvalidInput(f"{path}: expected COCO captions JSON (images, annotations); use .jsonl for one "
                               "query per line")
        images = data.get("images") if isinstance(data.get("images"), list) else []
        names = {im.get("id"): im.get("file_name") for im in images
                 if isinstance(im, dict) and isinstance(im.get("id"), (int, str))}
        out = []
        for i, a in enumerate(data["annotations"]):
            caption, image_id = (a.get("caption"), a.get("image_id")) if isinstance(a, dict) else (None, None)
            name = names.get(image_id) if isinstance(image_id, (int, str)) else None
            if not isinstance(caption, str) or not caption.strip() or not isinstance(name, str):
                raise InvalidInput(f"{path}: annotation {i} has no caption or names no image")
            out.append(EvalQuery(caption.strip(), None, [name]))
    else:
        out = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInput(f"{path} line {i + 1} is not JSON: {exc}") from exc
                if not isinstance(obj, dict):
                    raise InvalidInput(f"{path} line {i + 1}: expected an object with query and relevant")
                out.append(_query(obj, f"{path} line {i + 1}", base))
    if not out:
        raise InvalidInput(f"{path}: no queries")
    return out


def ranking_metrics(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int] = KS) -> dict[str, np.ndarray]:
    """Per-query metrics from binary relevance of ranked results.

    hits: (q, K) bool, hits[i, r] = the result at rank r + 1 of query i is relevant (K >= max(ks), >= 10);
    n_relevant: (q,) ints >= 1. Returns {"recall@k": (q,), "mrr": (q,), "ndcg@10": (q,)} float64.
    """
    hits = np.asarray(hits, bool)
    n_relevant = np.asarray(n_relevant, np.int64)
    out = {f"recall@{k}": hits[:, :k].any(1).astype(np.float64) for k in ks}
    first = np.where(hits.any(1), hits.argmax(1) + 1, 0)
    out["mrr"] = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    disc = 1.0 / np.log2(np.arange(2, 12))  # ranks 1..10
    dcg = (hits[:, :10] * disc[: hits[:, :10].shape[1]]).sum(1)
    ideal = np.array([disc[: min(int(n), 10)].sum() for n in n_relevant])
    out["ndcg@10"] = dcg / ideal
    return out


class _Resolver:
    """Maps a query file's relevant items to row ids of a table (exact path, path suffix, or id)."""

    def __init__(self, index: Index, table: str):
        if table not in index.tables():
            raise InvalidInput(f"the index has no {table!r} table (tables: {', '.join(index.tables()) or 'none'})")
        names = [f.name for f in index.store.schema(table)]
        keys = [c for c in ("path", "text") if c in names]  # texts rows are also found by their text
        self.by_path, self.id_set = {}, set()
        for b in index.store.scan(table, ["id", *keys]):
            ids = b.column(0).to_pylist()
            self.id_set.update(ids)
            for c in range(1, b.num_columns):
                for i, p in zip(ids, b.column(c).to_pylist()):
                    self.by_path[os.path.normpath(str(p)) if c == 1 and keys[0] == "path" else str(p)] = i
        self.table = table

    def __call__(self, item, where: str) -> int:
        if isinstance(item, int) and not isinstance(item, bool):
            if item in self.id_set:
                return item
            raise InvalidInput(f"{where}: relevant id {item} is not in the index's {self.table} table")
        if str(item) in self.by_path:
            return self.by_path[str(item)]
        key = os.path.normpath(str(item))
        if key in self.by_path:
            return self.by_path[key]
        absolute = os.path.normpath(os.path.abspath(key))
        if absolute in self.by_path:
            return self.by_path[absolute]
        tail = [i for p, i in self.by_path.items() if p.endswith(os.sep + key.lstrip(os.sep))]
        if len(tail) == 1:
            return tail[0]
        what = "matches several rows" if tail else "is not in the index"
        raise InvalidInput(f"{where}: relevant item {item!r} {what} ({self.table} table)")


def evaluate_retrieval(index: Index, queries: Sequence[EvalQuery], table: str = "images", depth: int = 100,
                       encoder=None, long_text: str = "chunk", batch: int = 256,
                       on_progress: Callable[[Progress], None] | None = None,
                       options: HybridOptions | None = None) -> dict:
    """Search every query and score its ranking. Returns ``{"summary": {metric: mean, "queries": n},
    "queries": [{"query" | "image", "relevant", "first_relevant_rank", metric: value, ...}]}``; when the queries
    have a ``kind``, ``summary["kinds"]`` holds each kind's means. ``options``: rank text queries with hybrid
    search (``options.mode`` text, hybrid or auto; vector, the default, is the batched cosine ranking)."""
    if not queries:
        raise InvalidInput("no queries to evaluate")
    depth = max(depth, max(KS))
    resolve = _Resolver(index, table)
    relevant = [{resolve(r, f"query {i + 1}") for r in q.relevant} for i, q in enumerate(queries)]
    texts = [i for i, q in enumerate(queries) if q.text is not None]
    images = [i for i, q in enumerate(queries) if q.image is not None]
    hits = np.zeros((len(queries), depth), bool)
    done = 0
    if options is not None and options.mode != "vector":
        _rank_hybrid(index, queries, texts, table, depth, relevant, hits, encoder, long_text, options, on_progress)
        texts = []
    for group, kind in ((texts, "text"), (images, "image")):
        for s in range(0, len(group), batch):
            part = group[s:s + batch]
            args = {kind: [queries[i].text if kind == "text" else queries[i].image for i in part]}
            xq = query_vectors(index, **args, long_text=long_text, encoder=encoder)
            D, I = index.search_vectors(table, xq, depth)
            for row, i in enumerate(part):
                hits[i, : I.shape[1]] = [int(v) in relevant[i] for v in I[row]]
            done += len(part)
            if on_progress is not None:
                on_progress(Progress("search", done, len(queries)))
    per = ranking_metrics(hits, np.array([len(r) for r in relevant]))
    first = np.where(hits.any(1), hits.argmax(1) + 1, 0)
    rows = []
    for i, q in enumerate(queries):
        row = {"query": q.text} if q.text is not None else {"image": q.image}
        row["relevant"] = q.relevant
        if q.kind is not None:
            row["kind"] = q.kind
        row["first_relevant_rank"] = int(first[i]) or None
        row.update({m: round(float(v[i]), 6) for m, v in per.items()})
        rows.append(row)
    summary = {m: round(float(v.mean()), 6) for m, v in per.items()}
    summary["queries"] = len(queries)
    kinds = sorted({q.kind for q in queries if q.kind is not None})
    if kinds:
        summary["kinds"] = {}
        for kind in kinds:
            sel = np.array([q.kind == kind for q in queries])
            summary["kinds"][kind] = {**{m: round(float(v[sel].mean()), 6) for m, v in per.items()},
                                      "queries": int(sel.sum())}
    return {"summary": summary, "queries": rows}


def _rank_hybrid(index: Index, queries, texts: list[int], table: str, depth: int, relevant, hits, encoder,
                 long_text, options: HybridOptions, on_progress) -> None:
    """Text queries ranked one by one by :func:`hybrid_search` (vector, keyword or fused)."""
    for n, i in enumerate(texts, 1):
        got = hybrid_search(index, queries[i].text, k=depth, table=table, encoder=encoder, long_text=long_text,
                            options=options).column("id").to_pylist()
        hits[i, : len(got)] = [int(v) in relevant[i] for v in got]
        if on_progress is not None:
            on_progress(Progress("search", n, len(queries)))


def clip_benchmark_record(result: dict, model: str, dataset: str, language: str = "en") -> dict:
    """``evaluate_retrieval``'s summary in CLIP_benchmark's output JSON (``clip_benchmark eval --output``):
    dataset, model, pretrained, task ``zeroshot_retrieval``, metrics ``image_retrieval_recall@k`` (text queries
    finding images; also ``image_retrieval_mrr`` and ``image_retrieval_ndcg@10``), language."""
    arch, _, pretrained = model.partition(":")
    s = result["summary"]
    metrics = {f"image_retrieval_{m}": s[m] for m in s if m not in ("queries", "kinds")}
    return {"dataset": dataset, "model": arch, "pretrained": pretrained, "task": "zeroshot_retrieval",
            "metrics": metrics, "language": language}


__all__ = ["EvalQuery", "KS", "clip_benchmark_record", "evaluate_retrieval", "ranking_metrics", "read_queries"]

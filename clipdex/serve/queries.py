"""A search request -> one query vector -> a page of result rows, on top of ``retrieval.query``.

The query vector is ``q = norm(w * e + sum_i v_i * n_i)`` where ``e`` is the query's embedding (a text, an image,
a given vector or a stored row's vector: "more like this") and ``n_i`` the embeddings of the ``negative`` texts with
weights ``v_i = -negative_weights[i]`` (0.5 each by default). Texts and images go through the index's batcher so
that queries arriving together share one model call. Pages: ``offset + k`` rows are fetched and the first
``offset`` dropped (ranks stay global).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import math
from typing import Annotated, Optional

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from clipdex.serve.config import MAX_K, MAX_OFFSET
from clipdex.serve.registry import SEARCHABLE, ServedIndex, jsonable
from retrieval.algorithms.fusion import combine_vectors
from retrieval.encode.text import encode_long_texts, query_strategy
from retrieval.errors import InvalidInput
from retrieval.io.imageprep import ImageReadError, ImageTooLarge, open_image
from retrieval.query.arithmetic import parse_query, term_words
from retrieval.query.hybrid import DEFAULT_FUSION, FUSIONS, MODES, HybridOptions, hybrid_search, resolve_mode
from retrieval.query.search import search
from retrieval.query.video import VideoSearchOptions, search_videos
from retrieval.store.where import filter_sql

NEGATIVE_WEIGHT = 0.5
MAX_TEXT = 10_000     # characters of a query text, a negative text or a filter
MAX_WEIGHT = 1000.0   # |weight| of the query and of each negative text
MAX_ID = (1 << 63) - 1


class SearchRequest(BaseModel):
    """The body of ``POST /api/search`` (JSON, or multipart form fields with ``image`` as a file)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    index: Optional[str] = Field(None, description="served index name; optional when one is served")
    table: str = Field("images", description="images, frames, videos or texts")
    text: Optional[str] = Field(None, max_length=MAX_TEXT)
    image: Optional[str] = Field(None, description="base64 image bytes (a data: URL is accepted); or upload a file")
    vector: Optional[list[float]] = Field(None, max_length=65536)
    like_id: Optional[int] = Field(None, ge=0, le=MAX_ID, description="more like this: the id of a row of `table`")
    weight: float = Field(1.0, ge=-MAX_WEIGHT, le=MAX_WEIGHT,
                          description="weight of the query in q = norm(w*e - sum v_i*n_i)")
    negative: list[Annotated[str, Field(max_length=MAX_TEXT)]] = Field(
        default_factory=list, max_length=16, description="texts to steer away from")
    negative_weights: Optional[list[Annotated[float, Field(ge=-MAX_WEIGHT, le=MAX_WEIGHT)]]] = Field(
        None, description=f"one per negative text (default {NEGATIVE_WEIGHT})")
    column: str = Field("vector", description="vector column to search: vector or text_vector (captions)")
    where: Optional[str] = Field(None, max_length=MAX_TEXT, description="row filter, as clipdex search --where")
    min_score: Optional[float] = Field(None, ge=-1.0, le=1.0)
    k: int = Field(20, ge=1, le=MAX_K)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    segments: bool = Field(True, description="videos: add the time segments that match")
    pool: Optional[str] = Field(None, description="videos: frame pooling, max | mean | query-scoring")
    alpha: Optional[float] = Field(None, ge=0.0, le=1.0, description="videos: CLIPRerank weight of the pooled score")
    mode: str = Field("auto", description="vector, text (keywords: paths, captions, metadata, OCR), hybrid (both, "
                                          "fused) or auto (hybrid on an index indexed with --ocr)")
    weights: Optional[list[Annotated[float, Field(ge=0.0, le=MAX_WEIGHT)]]] = Field(
        None, min_length=2, max_length=2, description="hybrid: [vector, keyword] weights (default [1, 1])")
    fusion: str = Field(DEFAULT_FUSION, description="hybrid: complete (reciprocal-rank fusion, k=60, with the keyword "
                        "hits carrying every query word first), rrf (plain) or score")
    explain: bool = Field(False, description="add why each hit matched: vector/text score and rank, matched words, "
                                             "OCR snippet")


def decode_base64_image(text: str, limit: int) -> bytes:
    """base64 (or a data: URL) -> bytes, refused past ``limit`` bytes before decoding."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > (limit * 4) // 3 + 8:
        raise TooLarge(f"image is larger than the {limit:,}-byte upload limit")
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"image is not valid base64: {exc}") from exc


class TooLarge(InvalidInput):
    """An upload over the limit (answered with 413)."""


def decode_image(data: bytes, limit: int, max_pixels: int):
    """Uploaded bytes -> PIL image, refused past ``limit`` bytes or ``max_pixels`` pixels (from the header, before
    decoding: a 656 KB PNG can hold 13000 x 13000 pixels, 1.3 GB once decoded)."""
    if len(data) > limit:
        raise TooLarge(f"image is larger than the {limit:,}-byte upload limit")
    try:
        return open_image(data, max_pixels=max_pixels)
    except ImageTooLarge as exc:
        raise TooLarge(f"query image: {exc.reason}") from None
    except ImageReadError as exc:
        raise InvalidInput(f"query image: {exc.reason}") from exc


def check_request(served: ServedIndex, req: SearchRequest, has_image: bool) -> None:
    """Refuse a bad request before any work: table, one query, the filter (validated like the stores do)."""
    if req.table not in SEARCHABLE:
        raise InvalidInput(f"table must be one of {', '.join(SEARCHABLE)}, not {req.table!r}")
    schema = served.schema(req.table)
    given = [n for n, v in (("text", req.text is not None), ("image", has_image), ("vector", req.vector is not None),
                            ("like_id", req.like_id is not None)) if v]
    if len(given) != 1:
        raise InvalidInput("give exactly one query: text, image, vector or like_id"
                           + (f" (got {', '.join(given)})" if given else ""))
    if (req.text is not None or has_image or req.negative) and not served.has_model:
        raise InvalidInput(f"index {served.name!r} holds vectors from an unknown model: query it with a vector "
                           "or like_id")
    if req.text is not None and not req.text.strip():
        raise InvalidInput("empty text query")
    if req.negative_weights is not None and len(req.negative_weights) != len(req.negative):
        raise InvalidInput(f"{len(req.negative_weights)} negative_weights for {len(req.negative)} negative texts")
    if any(not t.strip() for t in req.negative):
        raise InvalidInput("empty negative text")
    if not all(math.isfinite(w) for w in [req.weight, *(req.negative_weights or [])]):
        raise InvalidInput("weights must be finite numbers")
    if req.column not in schema.names or not pa.types.is_fixed_size_list(schema.field(req.column).type):
        raise InvalidInput(f"table {req.table!r} has no vector column {req.column!r}")
    if req.mode not in MODES or req.fusion not in FUSIONS:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)} and fusion one of {', '.join(FUSIONS)}")
    if req.table in ("videos", "frames") and (req.mode in ("text", "hybrid") or req.explain):
        raise InvalidInput("mode text/hybrid and explain search the images and texts tables")
    if req.offset + req.k > MAX_OFFSET + MAX_K:
        raise InvalidInput(f"offset + k must be at most {MAX_OFFSET + MAX_K}")
    filter_sql(req.where, schema, "duckdb")   # InvalidFilter (400) before the store sees it


def encode_batch(served: ServedIndex):
    """The batcher's worker for one index: ("text:<strategy>" | "image", items) -> (n, d) unit rows."""
    def run(kind: str, items: list) -> np.ndarray:
        if kind == "image":
            return served.encoder.encode_images(items)
        return encode_long_texts(served.encoder, items, kind.partition(":")[2]).vectors
    return run


async def query_vector(served: ServedIndex, req: SearchRequest, image, run) -> np.ndarray:
    """The request's (d,) unit query vector; ``run(fn, *args)`` runs blocking work off the event loop."""
    strategy = query_strategy(served.index.manifest, req.table, None)
    jobs = []
    terms = parse_query(req.text) if req.text is not None else None  # "beach" + "sunset:0.5" - "people"
    if terms is not None:
        jobs.append(_arithmetic(served, terms, f"text:{strategy}"))
    elif req.text is not None:
        jobs.append(served.batcher.encode(f"text:{strategy}", req.text))
    elif image is not None:
        jobs.append(served.batcher.encode("image", image))
    jobs += [served.batcher.encode(f"text:{strategy}", t) for t in req.negative]
    vecs = list(await asyncio.gather(*jobs))
    if req.vector is not None:
        vecs.insert(0, np.asarray(req.vector, np.float32))
    elif req.like_id is not None:
        vecs.insert(0, await run(served.vector, req.table, req.like_id, req.column))
    e = vecs[0]
    if e.shape != (served.index.dim,):
        raise InvalidInput(f"vector has {e.size} values; index {served.name!r} holds {served.index.dim}-dimensional "
                           "vectors")
    norm = float(np.linalg.norm(e))
    if not np.isfinite(e).all() or norm == 0:
        raise InvalidInput("vector contains NaN, infinite or only zero values")
    q = req.weight * (e / norm)
    weights = req.negative_weights or [NEGATIVE_WEIGHT] * len(req.negative)
    for w, n in zip(weights, vecs[1:]):
        q = q - w * n
    norm = float(np.linalg.norm(q))
    if norm < 1e-6:
        raise InvalidInput("the query and its negatives cancel out (zero vector): change the weights")
    return (q / norm).astype(np.float32)


async def _arithmetic(served: ServedIndex, terms, kind: str) -> np.ndarray:
    """Query arithmetic's terms -> their combined (d,) unit vector (each term through the batcher)."""
    vecs = await asyncio.gather(*(served.batcher.encode(kind, t.value) for t in terms))
    add = [i for i, t in enumerate(terms) if t.sign > 0]
    sub = [i for i, t in enumerate(terms) if t.sign < 0]
    if not add:
        raise InvalidInput("query arithmetic needs at least one added term")
    try:
        return combine_vectors(np.stack([vecs[i] for i in add]), [terms[i].weight for i in add],
                               np.stack([vecs[i] for i in sub]) if sub else None, [terms[i].weight for i in sub])
    except ValueError as exc:
        raise InvalidInput(f"query arithmetic: {exc}") from None


def words_of(req: SearchRequest) -> str:
    """The words a keyword ranking looks for: the text, or arithmetic's added text terms."""
    if req.text is None:
        return ""
    terms = parse_query(req.text)
    return term_words(terms) if terms is not None else req.text


def run_search(served: ServedIndex, req: SearchRequest, q: np.ndarray) -> list[dict]:
    """Blocking: one page of results as JSON-ready dicts, with thumbnail and file URLs."""
    n = req.offset + req.k
    if req.table == "videos":
        opts = VideoSearchOptions(segments=req.segments)
        opts.pool = req.pool or opts.pool
        opts.alpha = opts.alpha if req.alpha is None else req.alpha
        table = search_videos(served.index, vectors=q[None], k=n, where=req.where, options=opts,
                              min_score=req.min_score)
    elif req.explain or resolve_mode(served.index, req.mode, words_of(req)) != "vector":
        options = HybridOptions(mode=req.mode, weights=tuple(req.weights or (1.0, 1.0)), fusion=req.fusion,
                                explain=req.explain)
        table = hybrid_search(served.index, vectors=q, words=words_of(req), k=n, table=req.table, where=req.where,
                              min_score=req.min_score, options=options)
    else:
        table = search(served.index, vectors=q[None], k=n, table=req.table, where=req.where,
                       min_score=req.min_score, column=req.column)
    rows = table.slice(req.offset).to_pylist()
    return [result_row(served.name, req.table, r) for r in rows]


def result_row(name: str, table: str, row: dict) -> dict:
    out = jsonable(row)
    base = f"/api/{{}}/{name}/{table}/{row['id']}"
    if table in ("images", "frames", "videos") and row.get("path"):
        t = row.get("t_best") if table == "videos" else None
        out["thumbnail"] = base.format("thumb") + (f"?t={t:.3f}" if t is not None and math.isfinite(t) else "")
        out["file"] = base.format("file")
    return out

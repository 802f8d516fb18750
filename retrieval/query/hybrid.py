"""Hybrid search: the vector ranking and the keyword ranking of a query, fused; and why each hit matched.

Modes: ``vector`` (cosine, as ``search``), ``text`` (BM25 over the full-text index: paths, captions, metadata,
texts, OCR), ``hybrid`` (both fused: by default complete-match RRF, reciprocal-rank fusion with ``k = 60`` in
which the keyword hits carrying every word of the query come first when only some hits do; ``fusion="rrf"`` for
plain RRF, ``"score"`` for weighted min-max scores; keyword hits past the vector candidates join the vector
ranking below them, by cosine), ``auto`` (hybrid for a query with words on an index that ran OCR, else vector).
docs/ALGORITHMS.md 12.

``where`` filters both rankings, so a filtered query keeps its k results whenever k rows match. ``min_score``
keeps its meaning in every mode: the least cosine a hit's picture must reach (its ``vector_score``), computed for
keyword hits too. In text and hybrid mode ``score`` is the ranking's own (BM25, fused) and ``vector_score`` and
``text_score`` stand beside it; ``explain`` adds ``vector_rank``, ``text_rank`` (0: not in that ranking's
candidates), ``matched`` (the query terms the row's words hold) and ``ocr`` (a snippet of the text read in the
picture).
"""
from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa

from retrieval.algorithms.fusion import (
    RRF_K,
    complete_match_fusion,
    rank_positions,
    reciprocal_rank_fusion,
    weighted_score_fusion,
)
from retrieval.algorithms.words import complete_matches, matched_terms, query_terms, query_words, snippet
from retrieval.encode.text import encode_long_texts, query_strategy
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index, open_index
from retrieval.index.fulltext import OCR_TABLE, full_text
from retrieval.query.arithmetic import Term, arithmetic_vector, image_term, parse_query, term_words
from retrieval.query.search import DEFAULT_K, load_query_image, query_vectors, rows_for_hits
from retrieval.store.base import arrow_to_vectors

log = logging.getLogger(__name__)
MODES = ("auto", "vector", "text", "hybrid")
FUSIONS = ("complete", "rrf", "score")
DEFAULT_FUSION = "complete"
_ID_BLOCK = 4096


@dataclass(frozen=True)
class HybridOptions:
    """How the rankings are made and fused: ``weights`` = (vector, keyword); ``candidates``: how deep each ranking
    goes before fusion (at least k)."""

    mode: str = "auto"
    weights: tuple[float, float] = (1.0, 1.0)
    fusion: str = DEFAULT_FUSION
    rrf_k: int = RRF_K
    candidates: int = 100
    explain: bool = False

    def check(self) -> None:
        if self.mode not in MODES:
            raise InvalidInput(f"unknown search mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.fusion not in FUSIONS:
            raise InvalidInput(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        w = np.asarray(self.weights, np.float64)
        if w.shape != (2,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() == 0:
            raise InvalidInput("weights: two finite non-negative numbers (vector, keyword), not both zero")
        if not 0 <= self.rrf_k <= 10_000 or not 1 <= self.candidates <= 10_000:
            raise InvalidInput("rrf_k must be in [0, 10000] and candidates in [1, 10000]")


def resolve_mode(index: Index, mode: str, words: str) -> str:
    """``auto`` -> hybrid when the query has words and the index ran OCR, else vector; a keyword mode without words
    is refused."""
    if mode == "auto":
        return "hybrid" if words.strip() and index.store.has_table(OCR_TABLE) else "vector"
    if mode in ("text", "hybrid") and not words.strip():
        raise InvalidInput(f"--mode {mode} needs words to look for: a text query (or added text terms)")
    return mode


def matching_ids(index: Index, table: str, where: str | None, ids: np.ndarray) -> np.ndarray:
    """(n,) bool: which of ``ids`` are rows of ``table`` that match ``where`` (all that exist when None)."""
    found: set[int] = set()
    uniq = np.unique(ids)
    for i in range(0, len(uniq), _ID_BLOCK):
        cond = f"id IN ({','.join(str(int(v)) for v in uniq[i:i + _ID_BLOCK])})"
        for batch in index.store.scan(table, ["id"], where=f"({where}) AND {cond}" if where else cond):
            found.update(batch.column(0).to_pylist())
    return np.asarray([int(v) in found for v in ids], bool)


def cosines(index: Index, table: str, xq: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(n,) float32 cosine of the (1, d) query with the rows ``ids`` (-inf for rows without a vector)."""
    out = np.full(len(ids), -np.inf, np.float32)
    if not len(ids):
        return out
    got = index.store.take(table, ids, ["id", "vector"])
    x, valid = arrow_to_vectors(got.column("vector"), index.dim)
    have = np.asarray(got.column("id").to_pylist(), np.int64)[valid]
    score = dict(zip(have.tolist(), (x @ xq[0]).tolist()))
    for j, v in enumerate(ids.tolist()):
        out[j] = score.get(v, -np.inf)
    return out


def keyword_ranking(index: Index, table: str, words: str, need: int, where: str | None = None,
                    accept=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The best ``need`` keyword hits that match ``where`` (and ``accept(ids) -> bool mask``): (ids, BM25 scores,
    query terms). Asks the engine for more until ``need`` qualify or it has no more."""
    ft = full_text(index, table)
    limit = max(2 * need, 50)
    while True:
        ids, scores, terms = ft.search(words, limit)
        keep = np.ones(len(ids), bool)
        if where and len(ids):
            keep &= matching_ids(index, table, where, ids)
        if accept is not None and keep.any():
            keep[keep] &= accept(ids[keep])
        if keep.sum() >= need or len(ids) < limit:
            return ids[keep][:need], scores[keep][:need], terms
        limit *= 4


def _encode_terms(index: Index, terms: Sequence[Term], encoder, long_text: str) -> np.ndarray:
    enc = encoder or index.encoder()
    if encoder is not None:
        index.check_model(enc.spec)

    def images(values):
        enc_i = index.encoder() if not hasattr(enc, "encode_images") else enc
        return enc_i.encode_images([load_query_image(v) if isinstance(v, (str, os.PathLike)) else v
                                    for v in values])

    return arithmetic_vector(terms, lambda texts: encode_long_texts(enc, texts, long_text).vectors, images)


def query_terms_of(text, image, add, subtract) -> list[Term] | None:
    """The query as arithmetic terms, or None for a plain query (one text or one image, nothing added)."""
    if not add and not subtract:
        return parse_query(text) if isinstance(text, str) else None
    terms = (parse_query(text) or [Term("text", text)]) if isinstance(text, str) else []
    if image is not None:
        terms.append(image_term(image, 1))
    for values, sign in ((add, 1), (subtract, -1)):
        terms.extend(_text(v, sign) if _is_text(v) else image_term(v, sign) for v in values)
    return terms


def _is_text(v) -> bool:
    """An added or subtracted term is an image when it is a PIL image or names an existing file (``:W`` allowed)."""
    if not isinstance(v, str):
        return False
    return not (os.path.isfile(v) or os.path.isfile(v.rpartition(":")[0]))


def _text(v: str, sign: int) -> Term:
    parsed = parse_query('"' + v.replace('"', "") + '"')
    if not parsed:
        raise InvalidInput("empty query term")
    return Term("text", parsed[0].value, parsed[0].weight, sign)


def hybrid_search(index: Index | str, text: str | None = None, *, image=None, vectors=None, words: str | None = None,
                  add: Sequence = (),
                  subtract: Sequence = (), k: int = DEFAULT_K, table: str = "images", where: str | None = None,
                  min_score: float | None = None, long_text: str | None = None, encoder=None,
                  options: HybridOptions | None = None) -> pa.Table:
    """Search ``table`` by what the pictures show and by the words they carry (see the module's docstring).
    ``add`` / ``subtract``: more terms (texts, or image paths / PIL images), with ``text`` in rclip's syntax too.
    ``vectors``: a (d,) or (1, d) query vector instead (then ``words`` are what the keyword ranking looks for;
    ``words`` also overrides the words of a text query)."""
    opts = options or HybridOptions()
    opts.check()
    if k < 1:
        raise InvalidInput(f"k must be at least 1, got {k}")
    if isinstance(index, (str, os.PathLike)):
        with open_index(index) as opened:
            return hybrid_search(opened, text, image=image, vectors=vectors, words=words, add=add,
                                 subtract=subtract, k=k, table=table, where=where, min_score=min_score,
                                 long_text=long_text, encoder=encoder, options=opts)
    long_text = query_strategy(index.manifest, table, long_text)
    terms = query_terms_of(text, image, add, subtract) if vectors is None else None
    if words is None:
        words = term_words(terms) if terms is not None else (text or "")
    mode = resolve_mode(index, opts.mode, words)
    if terms is not None:
        xq = _encode_terms(index, terms, encoder, long_text)
    elif mode == "text" and vectors is None and image is None and min_score is None and not opts.explain:
        xq = None  # a keyword-only query needs no model
    else:
        xq = query_vectors(index, text, image, vectors, long_text, encoder)
        if len(xq) != 1:
            raise InvalidInput("hybrid search takes one query vector")
    return _run(index, table, xq, words, mode, k, where, min_score, opts)


def _run(index: Index, table: str, xq: np.ndarray, words: str, mode: str, k: int, where, min_score,
         opts: HybridOptions) -> pa.Table:
    n = max(k, opts.candidates) if mode == "hybrid" else k
    vec_ids = vec_scores = np.zeros(0, np.int64)
    if mode in ("vector", "hybrid"):
        D, I = index.search_vectors(table, xq, n, where=where)
        keep = I[0] >= 0
        vec_ids, vec_scores = I[0][keep], D[0][keep]
    kw_ids, kw_scores, terms = np.zeros(0, np.int64), np.zeros(0, np.float32), query_terms(words)
    if mode == "text":
        accept = None if min_score is None else (lambda ids: cosines(index, table, xq, ids) >= min_score)
        kw_ids, kw_scores, terms = keyword_ranking(index, table, words, k, where, accept)
    elif mode == "hybrid":
        kw_ids, kw_scores, terms = keyword_ranking(index, table, words, n, where)
    if mode == "vector":
        ids, scores = vec_ids, vec_scores
    elif mode == "text":
        ids, scores = kw_ids, kw_scores
    vscore = dict(zip(vec_ids.tolist(), vec_scores.tolist()))
    if mode == "hybrid":
        full_ids, full_scores = extend_vector_ranking(index, table, xq, vec_ids, vec_scores, kw_ids)
        vscore.update(zip(full_ids.tolist(), full_scores.tolist()))
        if opts.fusion == "complete":
            bodies = full_text(index, table).bodies(kw_ids) if len(kw_ids) else {}
            complete = complete_matches(query_words(words), [bodies.get(i, "") for i in kw_ids.tolist()])
            ids, scores = complete_match_fusion(full_ids, kw_ids, np.asarray(complete, bool), opts.weights, opts.rrf_k)
        elif opts.fusion == "rrf":
            ids, scores = reciprocal_rank_fusion([full_ids, kw_ids], opts.weights, opts.rrf_k)
        else:
            ids, scores = weighted_score_fusion([(full_ids, full_scores), (kw_ids, kw_scores)], opts.weights)
    missing = np.asarray([i for i in ids.tolist() if i not in vscore], np.int64)
    if xq is not None:
        vscore.update(zip(missing.tolist(), cosines(index, table, xq, missing).tolist()))
    v_all = np.asarray([vscore.get(i, np.nan) for i in ids.tolist()], np.float32)  # NaN: not computed (no model)
    if min_score is not None:
        keep = v_all >= min_score
        ids, scores, v_all = ids[keep], scores[keep], v_all[keep]
    ids, scores, v_all = ids[:k], scores[:k], v_all[:k]
    out = rows_for_hits(index, table, scores[None, :].astype(np.float32), ids[None, :].astype(np.int64))
    out = out.append_column("mode", pa.array([mode] * len(out), pa.string()))
    if mode != "vector":
        t_map = dict(zip(kw_ids.tolist(), kw_scores.tolist()))
        out = out.append_column("vector_score", pa.array(v_all, pa.float32(), from_pandas=True))
        out = out.append_column("text_score", pa.array([t_map.get(i) for i in ids.tolist()], pa.float32()))
    if opts.explain:
        out = _explain(index, table, out, ids, v_all, vec_ids, kw_ids, terms if words.strip() else [], mode)
    return out


def extend_vector_ranking(index: Index, table: str, xq: np.ndarray, vec_ids: np.ndarray, vec_scores: np.ndarray,
                          kw_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vector ranking continued over the keyword hits it does not hold, by their cosine: they rank below its
    candidates (their true rank is past them), so a row both rankings found outranks one only the keyword
    ranking found, and a keyword hit is never tied with a picture only the vector ranking found. -> (ids (m,),
    cosines (m,)), best first."""
    have = set(vec_ids.tolist())
    rest = np.asarray([i for i in kw_ids.tolist() if i not in have], np.int64)
    if not len(rest):
        return vec_ids, vec_scores
    cos = cosines(index, table, xq, rest)
    cos = np.where(np.isfinite(cos), cos, -1.0).astype(np.float32)  # a row without a vector: the least cosine
    order = np.argsort(-cos, kind="stable")
    return np.concatenate([vec_ids, rest[order]]), np.concatenate([vec_scores, cos[order]]).astype(np.float32)


def _explain(index: Index, table: str, out: pa.Table, ids: np.ndarray, v_all, vec_ids, kw_ids, terms, mode):
    """Add why each hit matched: vector_rank / text_rank (0: not among that ranking's candidates), matched terms,
    an OCR snippet."""
    if mode == "vector":
        out = out.append_column("vector_score", pa.array(v_all, pa.float32()))
    out = out.append_column("vector_rank", pa.array(rank_positions(vec_ids, ids), pa.int32()))
    out = out.append_column("text_rank", pa.array(rank_positions(kw_ids, ids), pa.int32()))
    bodies = {}
    if terms:
        try:
            bodies = full_text(index, table).bodies(ids) if full_text(index, table).sync() is not None else {}
        except (OSError, sqlite3.Error) as exc:  # an index on a read-only disk: no matched words, still results
            log.warning("no matched words: the full-text index of %s cannot be written (%s)", table, exc)
    matched = [matched_terms(terms, bodies.get(i, "")) for i in ids.tolist()]
    out = out.append_column("matched", pa.array(matched, pa.list_(pa.string())))
    ocr = ocr_for(index, out.column("hash").to_pylist()) if "hash" in out.column_names and table == "images" else {}
    hashes = out.column("hash").to_pylist() if ocr else [None] * len(out)
    out = out.append_column("ocr", pa.array([snippet(ocr.get(h), m) for h, m in zip(hashes, matched)], pa.string()))
    return out


def ocr_for(index: Index, hashes: Sequence[str | None]) -> dict[str, str]:
    """Content hash -> OCR text for the given hashes (those with text)."""
    want = sorted({h for h in hashes if h})
    if not want or not index.store.has_table(OCR_TABLE):
        return {}
    out: dict[str, str] = {}
    for i in range(0, len(want), 1024):
        cond = "hash IN (" + ",".join("'" + h.replace("'", "''") + "'" for h in want[i:i + 1024]) + ")"
        for b in index.store.scan(OCR_TABLE, ["hash", "text"], where=cond):
            out.update((h, t) for h, t in zip(b.column(0).to_pylist(), b.column(1).to_pylist()) if t)
    return out

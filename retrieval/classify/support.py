"""What classification reads from a support index (any clipdex image index built with the classifier's model).

- SuS-LC support sets (text -> image search per class, deduplicated by :func:`sus_lc_select_from_ranked`), cached in
  ``<index>/cache/susx-<key>.npz``; the key covers the model, classes, query prompts, per_class, dedup threshold and
  the images table's row count and last update, so a changed index or query is never served a stale set.
- X-MoRe captions: image -> image search, the neighbours' captions (``caption``, ``text_vector``).
- RECO memory: image -> k nearest memory images -> their ``text_vector``; text -> k nearest ``text_vector`` -> their
  image ``vector``; and the whole memory of pairs with neighbours for training the fusers.
Only captioned rows (non-null ``text_vector``) take part in X-MoRe and RECO.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from retrieval.algorithms.susx import sus_lc_select_from_ranked
from retrieval.algorithms.xmore import DEFAULT_RERANK, dedup_rerank_captions
from retrieval.errors import InvalidInput, ModelMismatch
from retrieval.index.directory import NO_MODEL, Index, open_index
from retrieval.store.base import arrow_to_vectors

log = logging.getLogger(__name__)
TABLE = "images"
CAPTIONED = "text_vector IS NOT NULL"
CACHE_VERSION = 1
cache_reads = 0  # SuS-LC cache hits in this process (tests read it)


def classifier_model(model: str | None, support: str | None) -> str | None:
    """The model a classification run loads: ``model`` when given, else the support index's own, else None (the
    default model). A support index of vectors without a model cannot classify (``ModelMismatch``)."""
    if model is not None or not support:
        return model
    with open_index(support) as ix:
        model = ix.model
    if model == NO_MODEL:
        raise ModelMismatch(f"support index {support} holds vectors of an unknown model; classify needs an index "
                            f"built with a CLIP model")
    return model


def open_support(path: str, encoder) -> Index:
    """Open a support index read-only and check it was built with ``encoder``'s model and holds images."""
    ix = open_index(path)
    try:
        ix.check_model(encoder.spec)
        if not ix.store.has_table(TABLE) or ix.store.count(TABLE) == 0:
            raise InvalidInput(f"support index {path} has no images")
    except Exception:
        ix.close()
        raise
    return ix


def captioned_count(ix: Index) -> int:
    return ix.store.count(TABLE, where=CAPTIONED) if "text_vector" in ix.store.schema(TABLE).names else 0


def require_captions(ix: Index, method: str) -> int:
    """The number of captioned rows; ``InvalidInput`` when there are none."""
    n = captioned_count(ix)
    if n == 0:
        raise InvalidInput(f"{method} needs captions, but support index {ix.path} has none; index an image-caption "
                           f"manifest (path, caption columns)")
    return n


def take_vectors(ix: Index, ids: np.ndarray, column: str) -> np.ndarray:
    """Vectors of rows ``ids`` (any shape; -1 = none, given zeros) -> ids.shape + (D,) float32."""
    flat = np.asarray(ids, np.int64).reshape(-1)
    out = np.zeros((flat.size, ix.dim), np.float32)
    uniq = np.unique(flat[flat >= 0])
    if uniq.size:
        rows = ix.store.take(TABLE, uniq, ["id", column])
        vecs, valid = arrow_to_vectors(rows.column(column), ix.dim)
        got = rows.column("id").to_numpy()[valid]
        pos = np.searchsorted(got, flat)  # take returns rows in the (sorted) order asked
        ok = (flat >= 0) & (pos < got.size)
        ok[ok] = got[pos[ok]] == flat[ok]
        out[ok] = vecs[pos[ok]]
    return out.reshape(*np.shape(ids), ix.dim)


# -- SuS-LC ----------------------------------------------------------------------------------------------------
@dataclass
class SupportSet:
    """A labelled support set: ``ids`` (M,) rows of the index, ``labels`` (M,) class positions, ``feats`` (M, D)."""

    ids: np.ndarray
    labels: np.ndarray
    feats: np.ndarray
    cache_path: Path | None = None
    from_cache: bool = False
    short: list[tuple[str, int]] = field(default_factory=list)  # (class, kept) below per_class


def _cache_key(ix: Index, classes, queries, per_class, dedup_ip) -> str:
    info = ix.manifest.get("tables", {}).get(TABLE, {})
    key = dict(v=CACHE_VERSION, model=ix.model, classes=list(classes), queries=[list(q) for q in queries],
               per_class=int(per_class), dedup_ip=float(dedup_ip), rows=ix.store.count(TABLE),
               manifest_rows=info.get("rows"), updated=ix.manifest.get("updated"))
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


@contextlib.contextmanager
def _quiet(name: str):
    """Hold back a module's warnings while candidates are still being widened (the caller reports the outcome)."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def _ranked(ix: Index, q_embs: np.ndarray, owner: np.ndarray, classes: list[int], n_classes: int, top: int):
    """One store search for the queries of ``classes``; per class, ids ranked by the max over its queries."""
    D, I = ix.search_vectors(TABLE, q_embs, top)
    out = {}
    for c in classes:
        rows = np.nonzero(owner == c)[0]
        d, i = D[rows].reshape(-1), I[rows].reshape(-1)
        keep = i >= 0
        d, i = d[keep], i[keep]
        order = np.lexsort((i, -d))  # best score first, ties by lower id
        d, i = d[order], i[order]
        _, first = np.unique(i, return_index=True)  # the best score of each id (max-fusion over queries)
        first.sort()
        out[c] = i[first]
    return out


def sus_lc_support(ix: Index, encoder, classes: Sequence[str], queries: Sequence[Sequence[str]],
                   per_class: int = 100, dedup_ip: float = 0.94, use_cache: bool = True) -> SupportSet:
    """SuS-LC over the store: ``queries[c]`` are the prompts of class c ("A photo of a {}." or its descriptions).

    Candidates come from one batched text -> image search (4 x per_class per query, doubled for classes whose
    dedup leaves too few, up to the table size); the selection is :func:`sus_lc_select_from_ranked`.
    """
    global cache_reads
    key = _cache_key(ix, classes, queries, per_class, dedup_ip)
    cache = Path(ix.path) / "cache" / f"susx-{key}.npz"
    if use_cache and cache.is_file():
        try:
            z = np.load(cache)
            cache_reads += 1
            s = SupportSet(z["ids"], z["labels"], z["feats"], cache, True)
            s.short = [(str(c), int(n)) for c, n in zip(z["short_classes"], z["short_kept"])]
            return s
        except (OSError, KeyError, ValueError) as exc:
            log.warning("ignoring unreadable support cache %s: %s", cache, exc)
    rows = ix.store.count(TABLE)
    q_texts = [q for qs in queries for q in qs]
    owner = np.repeat(np.arange(len(queries)), [len(qs) for qs in queries])
    q_embs = encoder.encode_long_texts(q_texts).vectors  # long descriptions are pooled, never truncated
    top = min(rows, 4 * per_class)
    pending = list(range(len(classes)))
    ranked_ids: dict[int, np.ndarray] = {}
    ranked_embs: dict[int, np.ndarray] = {}
    while pending:
        sel = np.isin(owner, pending)
        got = _ranked(ix, q_embs[sel], owner[sel], pending, len(classes), top)
        short = []
        for c in pending:
            ids = got[c]
            embs = take_vectors(ix, ids, "vector")
            ranked_ids[c], ranked_embs[c] = ids, embs
            with _quiet("retrieval.algorithms.susx"):
                kept, _ = sus_lc_select_from_ranked([ids], [embs], per_class, dedup_ip)
            if kept.size < per_class and top < rows:
                short.append(c)
        pending, top = short, min(rows, 2 * top)
    order = range(len(classes))
    with _quiet("retrieval.algorithms.susx"):
        ids, labels = sus_lc_select_from_ranked([ranked_ids[c] for c in order], [ranked_embs[c] for c in order],
                                                per_class, dedup_ip)
    feats = take_vectors(ix, ids, "vector")
    counts = np.bincount(labels, minlength=len(classes))
    s = SupportSet(ids, labels, feats, cache, False,
                   [(classes[c], int(counts[c])) for c in order if counts[c] < per_class])
    if use_cache:
        _write_cache(s, cache)
    return s


def _write_cache(s: SupportSet, path: Path) -> None:
    try:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, ids=s.ids, labels=s.labels, feats=s.feats, short_classes=np.array([c for c, _ in s.short], str),
                 short_kept=np.array([n for _, n in s.short], np.int64))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only index still works, it just cannot remember
        log.warning("could not cache the support set in %s: %s", path.parent, exc.strerror or exc)
        s.cache_path = None


# -- X-MoRe and RECO ---------------------------------------------------------------------------------------------
def caption_neighbours(ix: Index, feats: np.ndarray, k: int = 16, retrieve: int = 128,
                       rerank: bool = DEFAULT_RERANK) -> np.ndarray:
    """X-MoRe retrieval for a block of query images: feats (B, D) -> caption row ids (B, k), -1 where fewer.

    Image -> image search over captioned rows (``retrieve`` neighbours), then :func:`dedup_rerank_captions`
    (duplicate captions dropped, re-sorted by image-caption score when ``rerank``, first k kept).
    """
    D, I = ix.search_vectors(TABLE, feats, retrieve, where=CAPTIONED)
    uniq = np.unique(I[I >= 0])
    rows = ix.store.take(TABLE, uniq, ["id", "caption"])
    caption = dict(zip(rows.column("id").to_pylist(), rows.column("caption").to_pylist()))
    embs = take_vectors(ix, I, "text_vector")  # (B, R, D)
    out = np.full((len(feats), k), -1, np.int64)
    for b in range(len(feats)):
        valid = np.nonzero(I[b] >= 0)[0]
        pos = dedup_rerank_captions(feats[b], embs[b, valid], k, [caption.get(int(i)) or "" for i in I[b, valid]],
                                    rerank=rerank)
        out[b, :pos.size] = I[b, valid[pos]]
    return out


def image_to_texts(ix: Index, feats: np.ndarray, k: int) -> np.ndarray:
    """RECO for image queries: feats (B, D) -> text vectors (B, k, D) of the k nearest captioned memory images."""
    _, I = ix.search_vectors(TABLE, feats, k, where=CAPTIONED)
    return take_vectors(ix, I, "text_vector")


def text_to_images(ix: Index, texts: np.ndarray, k: int) -> np.ndarray:
    """RECO for text queries: texts (B, D) -> image vectors (B, k, D) of the k nearest memory texts."""
    _, I = ix.search_vectors(TABLE, texts, k, column="text_vector")
    return take_vectors(ix, I, "vector")


def memory_pairs(ix: Index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All captioned rows: ``(ids (M,), image vectors (M, D), text vectors (M, D))``, ids ascending."""
    ids, img, txt = [], [], []
    for batch in ix.store.scan(TABLE, ["id", "vector", "text_vector"], where=CAPTIONED):
        ids.append(batch.column(0).to_numpy())
        img.append(arrow_to_vectors(batch.column(1), ix.dim)[0])
        txt.append(arrow_to_vectors(batch.column(2), ix.dim)[0])
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0, ix.dim), np.float32), np.zeros((0, ix.dim), np.float32)
    ids_a = np.concatenate(ids)
    order = np.argsort(ids_a, kind="stable")
    return ids_a[order], np.concatenate(img)[order], np.concatenate(txt)[order]


def memory_neighbours(ix: Index, ids: np.ndarray, img: np.ndarray, txt: np.ndarray, k: int, block: int = 1024,
                      on_progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Neighbours of every memory pair as positions into ``ids``: (M, k + 1) for images (nearest captioned images)
    and for texts (nearest texts). k + 1 because each pair usually finds itself, which training masks out."""
    m = len(ids)
    kk = min(k + 1, m)
    inb = np.empty((m, kk), np.int64)
    tnb = np.empty((m, kk), np.int64)
    for s in range(0, m, block):
        _, Ii = ix.search_vectors(TABLE, img[s:s + block], kk, where=CAPTIONED)
        _, It = ix.search_vectors(TABLE, txt[s:s + block], kk, column="text_vector")
        for dst, I in ((inb, Ii), (tnb, It)):
            pos = np.clip(np.searchsorted(ids, I), 0, m - 1)
            found = ids[pos] == I
            own = np.arange(s, s + len(I))[:, None]
            dst[s:s + len(I)] = np.where(found, pos, own)  # a missing hit points at the pair itself: masked out
        if on_progress is not None:
            on_progress(min(m, s + block), m)
    return inb, tnb

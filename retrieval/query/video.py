"""Video search: gather candidates and their frames from an index, score them with ``retrieval.algorithms.video``.

For each query vector q (text or image, unit norm):

1. candidates: the ``candidates`` best videos by their pooled vector (``videos`` ANN, ``where`` applies here) plus the
   ``candidates`` best distinct videos of the ``candidates * frame_factor`` best frames (``frames`` ANN);
2. gather every frame vector of the candidates (``video_id IN (...)``), in time order, padded with ``pad_frames``;
3. pooled score with the chosen pooling: ``maxpool_sim``, ``mean_pooling_sim`` (the same cosine as the stored video
   vector, which is the mean of the frames) or ``query_scoring_sim`` (``tau``);
4. ``clip_rerank(pooled, frame sims, alpha)``: alpha * pooled + (1 - alpha) * max over frames (alpha = 1 keeps the
   pooled score; with ``pool="max"`` both terms are the max);
5. top k by that score, each with its best moment (``best_frame``) and, on request, its ``frame_segments``.

No scoring math lives here: this module only gathers inputs for the pure functions.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from retrieval.algorithms.video import (
    best_frame,
    clip_rerank,
    frame_segments,
    maxpool_sim,
    mean_pooling_sim,
    pad_frames,
    query_scoring_sim,
)
from retrieval.cancel import checkpoint
from retrieval.encode.text import query_strategy
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index, open_index
from retrieval.query.frame_cache import FrameCache, frame_cache, wanted
from retrieval.query.search import DEFAULT_K, query_vectors, search
from retrieval.store.base import VECTOR_COLUMNS, arrow_to_vectors

POOLS = ("max", "mean", "query-scoring")
SEGMENT_TYPE = pa.list_(pa.struct([("start", pa.float64()), ("end", pa.float64()), ("peak_t", pa.float64()),
                                   ("peak_score", pa.float64())]))


@dataclass
class VideoSearchOptions:
    pool: str = "max"              # frame aggregation for the pooled score: max | mean | query-scoring
    tau: float = 0.1               # query-scoring softmax temperature
    alpha: float = 0.4             # CLIPRerank weight of the pooled score
    candidates: int = 100          # videos shortlisted by each first stage (video vectors, frames)
    frame_factor: int = 4          # frames fetched by the frame ANN per candidate
    segments: bool = False         # add (start, end) segments of matching frames
    threshold: float | None = None  # segment threshold; None: the query's best frame score minus ``margin``
    margin: float = 0.05
    max_gap: float | None = None   # seconds a segment may bridge between matching frames
    normalize: bool = False        # CLIPRerank min-max normalisation

    def check(self) -> "VideoSearchOptions":
        if self.pool not in POOLS:
            raise InvalidInput(f"unknown pooling {self.pool!r}; choose one of {', '.join(POOLS)}")
        if not (self.tau > 0 and not math.isnan(self.tau)):
            raise InvalidInput(f"--tau must be a positive temperature, got {self.tau}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InvalidInput(f"--alpha must be between 0 and 1, got {self.alpha}")
        if self.candidates < 1 or self.frame_factor < 1:
            raise InvalidInput(f"--candidates must be at least 1, got {self.candidates}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise InvalidInput(f"--threshold must be a finite score, got {self.threshold}")
        return self


def _id_list(ids) -> str:
    return ",".join(str(int(v)) for v in ids)


def candidate_videos(index: Index, q: np.ndarray, opts: VideoSearchOptions, where: str | None = None,
                     cache: FrameCache | None = None) -> np.ndarray:
    """Union of the video-vector and frame-level shortlists for one query q (d,) -> video ids (n,) int64.

    Frames whose video has no row (an indexing run killed between committing a video's frames and its row; the
    next run deletes them) are skipped, as are frames of videos the ``where`` filter leaves out. ``cache``: the
    index's ``frame_cache``, which answers frame -> video (and, without ``where``, which videos have rows)."""
    _, Iv = index.search_vectors("videos", q[None], opts.candidates, where=where)
    _, If = index.search_vectors("frames", q[None], opts.candidates * opts.frame_factor)
    fids = If[0][If[0] >= 0]
    from_frames = np.zeros(0, np.int64)
    if len(fids):
        if cache is not None:
            vid = cache.video_of(fids)
        else:
            vid = index.store.take("frames", fids, ["video_id"]).column("video_id").to_numpy()
        _, first = np.unique(vid, return_index=True)  # best frame first: keep the first occurrence of each video
        from_frames = vid[np.sort(first)].astype(np.int64)
        if cache is not None and not where:
            keep = cache.video_rows
        else:
            cond = f"id IN ({_id_list(from_frames)})"
            rows = index.store.scan("videos", ["id"], where=f"({where}) AND {cond}" if where else cond)
            keep = np.concatenate([b.column(0).to_numpy() for b in rows] or [np.zeros(0, np.int64)])
        from_frames = from_frames[np.isin(from_frames, keep)][: opts.candidates]
    return np.unique(np.concatenate([Iv[0][Iv[0] >= 0], from_frames]))


def gather_frames(index: Index, video_ids: np.ndarray, cache: FrameCache | None = None
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frame vectors and times of each video, in time order: -> ([(F_i, d) float32], [(F_i,) float64 seconds]);
    from ``cache`` (the index's ``frame_cache``) when given, else from the store."""
    if cache is not None:
        return cache.frames(np.asarray(video_ids, np.int64))
    parts = []
    for i in range(0, len(video_ids), 2048):
        checkpoint()
        where = f"video_id IN ({_id_list(video_ids[i:i + 2048])})"
        parts.extend(index.store.scan("frames", ["video_id", "t", "vector"], where=where))
    if not parts:
        return [np.zeros((0, index.dim), np.float32)] * len(video_ids), [np.zeros(0)] * len(video_ids)
    table = pa.Table.from_batches(parts)
    vid = table.column("video_id").to_numpy()
    t = table.column("t").to_numpy()
    vec, _ = arrow_to_vectors(table.column("vector"), index.dim)
    order = np.lexsort((t, vid))
    vid, t, vec = vid[order], t[order], vec[order]
    lo = np.searchsorted(vid, video_ids, "left")
    hi = np.searchsorted(vid, video_ids, "right")
    return [vec[a:b] for a, b in zip(lo, hi)], [t[a:b] for a, b in zip(lo, hi)]


def rank_videos(q: np.ndarray, frames: list[np.ndarray], times: list[np.ndarray], opts: VideoSearchOptions) -> dict:
    """Score N candidate videos for one query q (d,) with the pure functions of ``retrieval.algorithms.video``.

    ``score`` = alpha * cos(q, mean-pooled video) + (1 - alpha) * pooled frames (max: CLIPRerank exactly).
    Returns arrays over the N candidates: ``score`` (CLIPRerank), ``pool_score``, ``t_best``, ``frame_score`` and
    ``sims`` / ``t`` / ``mask`` (N, F) for segments.
    """
    V, mask = pad_frames(frames)                       # (N, F, d), (N, F)
    T, _ = pad_frames([t[:, None] for t in times])     # (N, F, 1) frame times, padded like the vectors
    T = T[..., 0].astype(np.float64)
    sims = np.einsum("nfd,d->nf", V, q)                # cos(q, frame): stored frame vectors are unit norm
    qq = q[None, :]
    # CLIPRerank: the first-stage score is the video vector's (the mean-pooled frames), reranked with the frames
    # aggregated as --pool says: max is CLIPRerank proper; mean / query-scoring enter as one pooled "frame"
    initial = mean_pooling_sim(qq, V, mask)[0]
    if opts.pool == "max":
        pooled = maxpool_sim(qq, V, mask)[0]
        score = clip_rerank(initial, sims, mask, opts.alpha, opts.normalize)
    else:
        pooled = initial if opts.pool == "mean" else query_scoring_sim(qq, V, opts.tau, mask)[0]
        score = clip_rerank(initial, pooled[:, None], None, opts.alpha, opts.normalize)
    t_best, s_best = best_frame(T, sims, mask)
    return {"score": score, "pool_score": pooled, "t_best": t_best, "frame_score": s_best, "sims": sims, "t": T,
            "mask": mask}


def search_videos(index: Index | str, text: str | None = None, *, image=None, vectors=None, k: int = DEFAULT_K,
                  where: str | None = None, options: VideoSearchOptions | None = None, long_text: str | None = None,
                  encoder=None, min_score: float | None = None) -> pa.Table:
    """Top-k videos for a text, an image or (q, d) vectors: rank, score, id, path, t_best, frame_score,
    pool_score, the video's columns and (with ``options.segments``) ``segments``; a ``query`` column for batches.
    ``min_score``: only videos whose fused score reaches it (fewer than k when fewer do)."""
    if k < 1:
        raise InvalidInput(f"k must be at least 1, got {k}")
    opts = (options or VideoSearchOptions()).check()
    if isinstance(index, (str, os.PathLike)):
        with open_index(index) as opened:  # opened here, closed here
            return search_videos(opened, text, image=image, vectors=vectors, k=k, where=where, options=opts,
                                 long_text=long_text, encoder=encoder, min_score=min_score)
    xq = query_vectors(index, text, image, vectors, query_strategy(index.manifest, "videos", long_text), encoder)
    schema = index.store.schema("videos")
    columns = [f.name for f in schema if f.name not in VECTOR_COLUMNS and not pa.types.is_fixed_size_list(f.type)]
    tables = []
    cache = frame_cache(index, read=wanted(index, len(xq)))  # a one-shot query does not read every frame
    for qi, q in enumerate(xq):
        checkpoint()   # a cancelled request's work stops between its stages
        ids = candidate_videos(index, q, opts, where, cache)
        if len(ids) == 0:
            continue
        frames, times = gather_frames(index, ids, cache)
        checkpoint()
        r = rank_videos(q, frames, times, opts)
        ok = np.flatnonzero(np.isfinite(r["score"]) & (r["score"] >= (-np.inf if min_score is None else min_score)))
        top = ok[np.argsort(-r["score"][ok], kind="stable")][:k]
        rows = index.store.take("videos", ids[top], columns)
        head = {"rank": pa.array(np.arange(1, len(top) + 1), pa.int32()),
                "score": pa.array(r["score"][top], pa.float32()), "id": pa.array(ids[top], pa.int64())}
        if len(xq) > 1:
            head = {"query": pa.array(np.full(len(top), qi), pa.int32()), **head}
        out = pa.table(head)
        for name in columns:
            if name == "id":
                continue
            out = out.append_column(name, rows.column(name))
            if name == "path":
                out = out.append_column("t_best", pa.array(r["t_best"][top], pa.float64()))
                out = out.append_column("frame_score", pa.array(r["frame_score"][top], pa.float32()))
                out = out.append_column("pool_score", pa.array(r["pool_score"][top], pa.float32()))
        if opts.segments:
            out = out.append_column("segments", _segments(r, top, opts))
        tables.append(out)
    if not tables:
        return _empty(index, columns, opts, batched=len(xq) > 1)
    return pa.concat_tables(tables)


def _segments(r: dict, top: np.ndarray, opts: VideoSearchOptions) -> pa.Array:
    """(start, end) runs of frames at or above the threshold, for each of the top videos."""
    threshold = opts.threshold
    if threshold is None:
        threshold = float(np.max(r["frame_score"])) - opts.margin
    out = []
    for i in top:
        m = r["mask"][i]
        segs = frame_segments(r["t"][i][m], r["sims"][i][m], threshold, opts.max_gap)
        out.append([s._asdict() for s in segs])
    return pa.array(out, SEGMENT_TYPE)


def _empty(index: Index, columns: list[str], opts: VideoSearchOptions, batched: bool) -> pa.Table:
    schema = index.store.schema("videos")
    fields = ([pa.field("query", pa.int32())] if batched else []) + [
        pa.field("rank", pa.int32()), pa.field("score", pa.float32()), pa.field("id", pa.int64())]
    for name in columns:
        if name != "id":
            fields.append(schema.field(name))
            if name == "path":
                fields += [pa.field("t_best", pa.float64()), pa.field("frame_score", pa.float32()),
                           pa.field("pool_score", pa.float32())]
    if opts.segments:
        fields.append(pa.field("segments", SEGMENT_TYPE))
    return pa.schema(fields).empty_table()


def search_frames(index: Index | str, text: str | None = None, *, image=None, vectors=None, k: int = DEFAULT_K,
                  where: str | None = None, min_score: float | None = None, long_text: str | None = None,
                  encoder=None) -> pa.Table:
    """Individual frames: rank, score, id, video_id, path, frame_index, t (seconds)."""
    return search(index, text, image=image, vectors=vectors, k=k, table="frames", where=where, min_score=min_score,
                  long_text=long_text, encoder=encoder)

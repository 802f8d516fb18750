"""Video retrieval math on top of frame pooling (docs/ALGORITHMS.md section 5): CLIPRerank, the best moment and
matching segments of a video, and frame sampling plans.

- CLIPRerank           ``s = alpha * initial + (1 - alpha) * max_f sim_f`` over a shortlist of candidates
- ``best_frame`` and ``frame_segments`` turn frame scores back into times in seconds
- ``sample_times_fps`` and ``sample_times_chunks`` say which times of a video to sample

The pooled similarities (max, mean, query scoring) and the padding of videos into ``(B, F, D)`` batches live in
``retrieval.algorithms.video_pooling`` and are re-exported here, so ``retrieval.algorithms.video`` remains the one
name for the video math. Every function is pure: arrays in, float32 (times float64) arrays out.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from retrieval.algorithms.arrays import to_numpy as _to_numpy
from retrieval.algorithms.video_pooling import check_mask as _check_mask
from retrieval.algorithms.video_pooling import (
    maxpool_sim,
    mean_pool_vectors,
    mean_pooling_sim,
    pad_frames,
    query_scoring_sim,
)

__all__ = [
    "Segment",
    "best_frame",
    "clip_rerank",
    "frame_segments",
    "maxpool_sim",
    "mean_pool_vectors",
    "mean_pooling_sim",
    "pad_frames",
    "query_scoring_sim",
    "sample_times_chunks",
    "sample_times_fps",
]


def clip_rerank(initial_scores, frame_sims, frame_mask=None, alpha: float = 0.4, normalize: bool = False) -> np.ndarray:
    """CLIPRerank: rescore a shortlist with its best frame, ``alpha * initial + (1 - alpha) * max_{f valid} sim_f``.

    Args:
        initial_scores: (N,) first-stage scores of N candidate videos (any leading query axes allowed: (..., N)).
        frame_sims: (N, F) query-to-frame similarities of each candidate (or (..., N, F)).
        frame_mask: (N, F) bool, True for real frames; None = all valid.
        alpha: weight of the initial score in [0, 1]. alpha = 1 keeps the initial order (returns the initial scores,
            exactly); alpha = 0 is pure max pooling over frames.
        normalize: per query, min-max normalise both the initial scores and the frame maxima over the N candidates
            to [0, 1] before mixing (a constant row maps to 0). Off by default.

    Returns:
        (N,) float32 (or (..., N)). A candidate with no valid frame has an undefined frame term: its score is
        ``-inf`` when alpha < 1.
    """
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    init = _to_numpy(initial_scores)
    sims = _to_numpy(frame_sims)
    if sims.ndim < 2 or sims.shape[:-1] != init.shape:
        raise ValueError(f"frame_sims must have shape initial_scores.shape + (F,) = {init.shape} + (F,); "
                         f"got {sims.shape}")
    mask = _check_mask(frame_mask, sims.shape)
    if sims.shape[-1] == 0:
        fmax = np.full(init.shape, -np.inf, dtype=np.float32)
    else:
        fmax = np.where(mask, sims, -np.inf).max(axis=-1)
    if normalize:
        init = _minmax_rows(init)
        fmax = _minmax_rows(fmax)
    if alpha == 1.0:
        return init.astype(np.float32)
    return (alpha * init + (1.0 - alpha) * fmax).astype(np.float32)


def _minmax_rows(x: np.ndarray) -> np.ndarray:
    """Min-max normalise along the last axis over the finite entries; -inf stays -inf, constant rows -> 0."""
    finite = np.isfinite(x)
    lo = np.where(finite, x, np.inf).min(axis=-1, keepdims=True)
    hi = np.where(finite, x, -np.inf).max(axis=-1, keepdims=True)
    span = hi - lo
    ok = np.isfinite(span) & (span > 0)
    scaled = np.where(ok, (x - np.where(np.isfinite(lo), lo, 0.0)) / np.where(ok, span, 1.0), 0.0)
    return np.where(finite, scaled, x).astype(np.float32)


def best_frame(t, scores, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Best frame of each video: its time and score.

    Args:
        t: (F,) frame times in seconds shared by all videos, or (B, F) per video.
        scores: (B, F) per-frame scores.
        mask: (B, F) bool, True for real frames; None = all valid.

    Returns:
        t_best: (B,) float64 seconds of the highest-scoring valid frame (first one on ties); NaN for a video with
            no valid frame.
        score_best: (B,) float32, ``-inf`` for a video with no valid frame.
    """
    sc = _to_numpy(scores)
    if sc.ndim != 2:
        raise ValueError(f"scores must have shape (B, F); got {sc.shape}")
    tt = _to_numpy(t, dtype=np.float64)
    if tt.ndim == 1:
        tt = np.broadcast_to(tt, sc.shape)
    if tt.shape != sc.shape:
        raise ValueError(f"t must have shape (F,) or {sc.shape}; got {tt.shape}")
    m = _check_mask(mask, sc.shape) & ~np.isnan(sc)
    B = sc.shape[0]
    if sc.shape[1] == 0:
        return np.full(B, np.nan), np.full(B, -np.inf, dtype=np.float32)
    masked = np.where(m, sc, -np.inf)
    idx = masked.argmax(axis=1)
    rows = np.arange(B)
    has = m.any(axis=1)
    t_best = np.where(has, tt[rows, idx], np.nan)
    s_best = np.where(has, masked[rows, idx], -np.inf).astype(np.float32)
    return t_best, s_best


class Segment(NamedTuple):
    """A run of frames scoring at or above a threshold: times in seconds of its first and last frame, and its peak."""

    start: float
    end: float
    peak_t: float
    peak_score: float


def frame_segments(t, scores, threshold: float, max_gap: float | None = None, min_len: float = 0) -> list[Segment]:
    """Merge frames scoring >= threshold into time segments, several per video.

    Frames are taken in time order. Two successive frames that both pass the threshold belong to the same segment
    when they are consecutive samples, or (if ``max_gap`` is given) when their time gap is <= ``max_gap`` seconds,
    which lets a segment bridge a short dip. ``start``/``end`` are the times of the segment's first and last frame
    (a one-frame segment has start == end); segments shorter than ``min_len`` seconds (end - start) are dropped.

    Args:
        t: (F,) frame times in seconds.
        scores: (F,) per-frame scores (NaN never passes).
        threshold: minimum score of a frame inside a segment.
        max_gap: optional largest gap in seconds that still joins two passing frames.
        min_len: minimum duration end - start in seconds.

    Returns:
        list of ``Segment(start, end, peak_t, peak_score)``, highest peak score first (earlier start on ties).
    """
    tt = _to_numpy(t, dtype=np.float64)
    sc = _to_numpy(scores, dtype=np.float64)
    if tt.ndim != 1 or tt.shape != sc.shape:
        raise ValueError(f"t and scores must both have shape (F,); got {tt.shape} and {sc.shape}")
    if max_gap is not None and not max_gap >= 0:
        raise ValueError(f"max_gap must be a non-negative number of seconds or None, got {max_gap}")
    order = np.argsort(tt, kind="stable")
    tt, sc = tt[order], sc[order]
    passing = np.flatnonzero(sc >= threshold)  # NaN compares False
    if passing.size == 0:
        return []
    joined = np.diff(passing) == 1
    if max_gap is not None:
        joined |= np.diff(tt[passing]) <= max_gap
    breaks = np.flatnonzero(~joined) + 1
    segments = []
    for run in np.split(passing, breaks):
        start, end = float(tt[run[0]]), float(tt[run[-1]])
        if end - start < min_len:
            continue
        k = run[np.argmax(sc[run])]
        segments.append(Segment(start, end, float(tt[k]), float(sc[k])))
    segments.sort(key=lambda s: (-s.peak_score, s.start))
    return segments


# --------------------------------------------------------------------------------------------------------------
# frame sampling plans
# --------------------------------------------------------------------------------------------------------------
def _check_duration(duration) -> float:
    d = float(duration)
    if not math.isfinite(d) or d < 0:
        raise ValueError(f"video duration must be a finite number of seconds >= 0, got {duration}")
    return d


def sample_times_fps(duration: float, fps: float) -> np.ndarray:
    """Times to sample at a fixed rate: ``k / fps`` for every k >= 0 with ``k / fps < duration`` (at least [0.0]).

    Args:
        duration: video length in seconds (finite, >= 0).
        fps: samples per second, > 0 (e.g. 1.0 = one frame a second, 0.5 = one every two seconds).

    Returns:
        (n,) float64 seconds, increasing, n = max(1, ceil(duration * fps)).
    """
    d = _check_duration(duration)
    try:
        rate = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a positive number of frames per second, got {fps!r}") from None
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"fps must be a positive number of frames per second, got {fps!r}")
    n = max(1, int(math.ceil(d * rate)))
    times = np.arange(n, dtype=np.float64) / rate
    times = times[times < d] if d > 0 else times[:1]
    return times if times.size else np.zeros(1)


def sample_times_chunks(duration: float, n: int) -> np.ndarray:
    """Times to sample one frame per chunk: the middle of each of n equal chunks, ``(i + 0.5) * duration / n``.

    Args:
        duration: video length in seconds (finite, >= 0).
        n: number of chunks (= frames), a positive integer (e.g. 16 as in the CLIP-Hitchhiker MSR-VTT setting).

    Returns:
        (n,) float64 seconds, increasing.
    """
    d = _check_duration(duration)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        raise ValueError(f"n must be a positive whole number of frames to sample, got {n!r}")
    return (np.arange(int(n), dtype=np.float64) + 0.5) * (d / int(n))

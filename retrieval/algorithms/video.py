"""Text-to-video scoring over per-frame CLIP embeddings (ALGORITHMS.md section 5).

A video is a stack of F frame embeddings, ``frames (B, F, D)`` for B videos, padded to a common F and described by
``frame_mask (B, F)`` (True = a real frame). Every function here is pure: numpy (or torch, converted at the
boundary) in, numpy float32 out.

Scores, for text t (normalised) and the valid frames v_1..v_n of one video:

- max pooling          ``s = max_f cos(t, v_f)``
- mean pooling         ``s = cos(t, norm(1/n sum_f v_f))`` (raw frame vectors averaged)
- query scoring        ``w = softmax_f(cos(t, v_f) / tau)``, ``u = sum_f w_f v_f`` (raw vectors), ``s = cos(t, u)``
  -- Bain et al., "A CLIP-Hitchhiker's Guide to Long Video Retrieval" (2022), https://github.com/m-bain/clip-hitchhiker
- CLIPRerank           ``s = alpha * initial + (1 - alpha) * max_f sim_f`` over a shortlist of candidates

Masking and the empty video: padded frames never win a max and get exactly zero softmax weight. A video with no
valid frame at all scores ``-inf`` in every similarity here (never NaN), so it sorts last and is easy to filter
with ``np.isfinite``.

Memory: the similarity functions work on blocks of ``block`` videos at a time, so their scratch memory is
O(block * F * (A + D)) instead of O(A * B * F); ``block=None`` picks a block size from a fixed element budget.
Block size never changes the result (each video's arithmetic is independent of the others).

Frame sampling plans (``sample_times_fps``, ``sample_times_chunks``) and result helpers (``frame_segments``,
``best_frame``) turn scores back into times in seconds.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import NamedTuple, Sequence

import numpy as np

from retrieval.algorithms.arrays import l2_normalize as _l2n
from retrieval.algorithms.arrays import to_numpy as _to_numpy

logger = logging.getLogger(__name__)

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

# Scratch budget (float32 elements) used to choose a block size when ``block=None``: 2**24 elements = 64 MiB.
_BLOCK_BUDGET = 1 << 24
_EPS = 1e-12


# --------------------------------------------------------------------------------------------------------------
# boundary helpers
# --------------------------------------------------------------------------------------------------------------
def _check_text_frames(text, frames, frame_mask):
    t = _to_numpy(text)
    v = _to_numpy(frames)
    if t.ndim != 2:
        raise ValueError(f"text must have shape (A, D); got {t.shape} (use text[None] for a single query)")
    if v.ndim != 3:
        raise ValueError(f"frames must have shape (B, F, D); got {v.shape} (use pad_frames for a list of videos)")
    if t.shape[1] != v.shape[2]:
        raise ValueError(f"text dim {t.shape[1]} does not match frame dim {v.shape[2]}")
    mask = _check_mask(frame_mask, v.shape[:2])
    return t, v, mask


def _check_mask(frame_mask, shape) -> np.ndarray:
    """(B, F) bool mask; None -> all True."""
    if frame_mask is None:
        return np.ones(shape, dtype=bool)
    m = _to_numpy(frame_mask, dtype=None).astype(bool, copy=False)
    if m.shape != tuple(shape):
        raise ValueError(f"frame_mask must have shape {tuple(shape)}; got {m.shape}")
    return m


def _block_size(block, n_videos: int, per_video: int) -> int:
    """Videos per block: ``block`` if given, else as many as fit the element budget (at least 1)."""
    if block is None:
        return max(1, min(max(n_videos, 1), _BLOCK_BUDGET // max(per_video, 1)))
    if isinstance(block, bool) or not isinstance(block, numbers.Integral) or block < 1:
        raise ValueError(f"block must be a positive integer number of videos, got {block!r}")
    return int(block)


def _frame_text_sims(t_n: np.ndarray, v_blk: np.ndarray) -> np.ndarray:
    """cos(t_a, v_bf) for a block: (b, F, D) x (A, D) -> (b, F, A).

    One (F, D) @ (D, A) product per video, so a video's numbers do not depend on which block it sits in."""
    return np.matmul(_l2n(v_blk), t_n.T)


# --------------------------------------------------------------------------------------------------------------
# similarities
# --------------------------------------------------------------------------------------------------------------
def maxpool_sim(text, frames, frame_mask=None, block: int | None = None) -> np.ndarray:
    """Max pooling over frames: ``S[a, b] = max_{f valid} cos(text[a], frames[b, f])``.

    Args:
        text: (A, D) query embeddings (normalised here).
        frames: (B, F, D) frame embeddings, padded along F (normalised here for the cosine).
        frame_mask: (B, F) bool, True for real frames; None = all frames valid.
        block: videos per block (bounds scratch memory to O(block * F * (A + D))); None = automatic.

    Returns:
        (A, B) float32; ``-inf`` for a video with no valid frame.
    """
    t, v, mask = _check_text_frames(text, frames, frame_mask)
    A, (B, F, D) = t.shape[0], v.shape
    out = np.full((A, B), -np.inf, dtype=np.float32)
    if B == 0 or F == 0 or A == 0:
        return out
    t_n = _l2n(t)
    step = _block_size(block, B, F * (A + D))
    for s in range(0, B, step):
        sims = _frame_text_sims(t_n, v[s : s + step])  # (b, F, A)
        sims = np.where(mask[s : s + step, :, None], sims, -np.inf)
        out[:, s : s + step] = sims.max(axis=1).T
    return out


def mean_pooling_sim(text, frames, frame_mask=None, block: int | None = None) -> np.ndarray:
    """Mean pooling: ``S[a, b] = cos(text[a], norm(mean_{f valid} frames[b, f]))`` over the raw frame vectors.

    Args:
        text: (A, D) query embeddings.
        frames: (B, F, D) frame embeddings (raw; averaged before normalising, as in CLIP4Clip's mean-pool).
        frame_mask: (B, F) bool, True for real frames; None = all valid.
        block: videos per block; None = automatic. Scratch memory O(block * F) plus the (B, D) pooled vectors.

    Returns:
        (A, B) float32; ``-inf`` for a video with no valid frame.
    """
    t, v, mask = _check_text_frames(text, frames, frame_mask)
    A, (B, F, D) = t.shape[0], v.shape
    out = np.full((A, B), -np.inf, dtype=np.float32)
    if B == 0 or F == 0 or A == 0:
        return out
    t_n = _l2n(t)
    counts = mask.sum(axis=1)  # (B,)
    step = _block_size(block, B, F * D)
    pooled = np.empty((B, D), dtype=np.float32)
    for s in range(0, B, step):
        m = mask[s : s + step].astype(np.float32)
        pooled[s : s + step] = np.einsum("bfd,bf->bd", v[s : s + step], m)  # sum of valid raw frames
    out[:] = t_n @ _l2n(pooled).T  # the 1/n of the mean is removed by the normalisation
    out[:, counts == 0] = -np.inf
    return out


def query_scoring_sim(text, frames, tau: float = 0.1, frame_mask=None, block: int | None = None) -> np.ndarray:
    """Query scoring (CLIP-Hitchhiker, Bain et al. 2022, m-bain/clip-hitchhiker).

    For query a and video b with valid frames v_f:
        ``w_f = softmax_f(cos(t_a, v_f) / tau)``  (padded frames get weight exactly 0),
        ``u = sum_f w_f v_f``  (weighted sum of the **raw** frame vectors),
        ``S[a, b] = cos(t_a, u)``.
    tau -> 0 recovers max pooling (all weight on the best frame), tau -> inf recovers mean pooling (uniform weights).
    Paper: MSR-VTT, ViT-B/16, 16 frames, R@1 33.3 (mean pooling) -> 34.4 (query scoring, tau = 0.1).

    Args:
        text: (A, D) query embeddings.
        frames: (B, F, D) frame embeddings.
        tau: softmax temperature, > 0 (``np.inf`` allowed: uniform weights).
        frame_mask: (B, F) bool, True for real frames; None = all valid.
        block: videos per block; scratch memory O(block * A * (F + D)); None = automatic.

    Returns:
        (A, B) float32; ``-inf`` for a video with no valid frame; 0 where the weighted sum u is the zero vector.
    """
    tau = float(tau)
    if not tau > 0 or math.isnan(tau):
        raise ValueError(f"tau must be a positive temperature, got {tau}")
    t, v, mask = _check_text_frames(text, frames, frame_mask)
    A, (B, F, D) = t.shape[0], v.shape
    out = np.full((A, B), -np.inf, dtype=np.float32)
    if B == 0 or F == 0 or A == 0:
        return out
    t_n = _l2n(t)
    step = _block_size(block, B, F * (A + D) + A * (F + D))
    for s in range(0, B, step):
        v_blk, m_blk = v[s : s + step], mask[s : s + step]
        logits = _frame_text_sims(t_n, v_blk).transpose(0, 2, 1) / tau  # (b, A, F)
        logits = np.where(m_blk[:, None, :], logits, -np.inf)
        top = logits.max(axis=2, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)  # all-masked rows: avoid inf - inf
        w = np.where(m_blk[:, None, :], np.exp(logits - top), 0.0)
        w /= np.maximum(w.sum(axis=2, keepdims=True), _EPS)
        u = np.matmul(w, v_blk)  # (b, A, D)
        out[:, s : s + step] = np.einsum("bad,ad->ab", _l2n(u), t_n)
    out[:, ~mask.any(axis=1)] = -np.inf
    return out


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
        raise ValueError(f"frame_sims must have shape initial_scores.shape + (F,) = {init.shape} + (F,); got {sims.shape}")
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


# --------------------------------------------------------------------------------------------------------------
# shaping and result helpers
# --------------------------------------------------------------------------------------------------------------
def pad_frames(videos: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Stack a list of per-video frame matrices into a padded batch.

    Args:
        videos: B arrays of shape (F_i, D) (F_i may be 0).

    Returns:
        frames: (B, Fmax, D) float32, zero rows where padded, Fmax = max(max_i F_i, 1).
        mask: (B, Fmax) bool, ``mask[i, f] = f < F_i``.
    """
    arrs = [_to_numpy(x) for x in videos]
    if not arrs:
        raise ValueError("pad_frames needs at least one video")
    dims = {a.shape[1] for a in arrs if a.ndim == 2}
    if any(a.ndim != 2 for a in arrs) or len(dims) != 1:
        raise ValueError(f"every video must be an (F_i, D) array with the same D; got shapes {[a.shape for a in arrs]}")
    (D,) = dims
    fmax = max(1, max(a.shape[0] for a in arrs))
    frames = np.zeros((len(arrs), fmax, D), dtype=np.float32)
    mask = np.zeros((len(arrs), fmax), dtype=bool)
    for i, a in enumerate(arrs):
        frames[i, : a.shape[0]] = a
        mask[i, : a.shape[0]] = True
    return frames, mask


def mean_pool_vectors(frames) -> np.ndarray:
    """One vector per video: ``norm(mean_f frames[f])`` of the raw frame vectors, (F, D) -> (D,) float32."""
    v = _to_numpy(frames)
    if v.ndim != 2 or v.shape[0] == 0:
        raise ValueError(f"frames must be a non-empty (F, D) array; got shape {v.shape}")
    return _l2n(v.mean(axis=0)).astype(np.float32)


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

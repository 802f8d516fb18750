"""Near-duplicate videos from their frame sequences: matched frames must line up in time, not just look alike.

Two videos that open on the same black frames or title card share a few seconds; a re-encoded copy shares every
frame at one time offset; a clip cut from a longer video shares all of its own frames with a stretch of the longer
one. ``align_videos`` takes the frames the two videos have in common (pairs of frame times whose CLIP vectors
match), finds the time offset most of them agree on, and measures how much of each video those aligned frames
cover. ``video_kind`` names the result. Pure functions: arrays in, a small record out.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Alignment(NamedTuple):
    """How two videos A and B line up: ``offset`` (seconds: t_B = t_A + offset), the share of each video's
    informative frames matched at that offset (``cover_a``, ``cover_b``), the matched time range in each
    (``range_a``, ``range_b``: (start, end) seconds) and how many frame pairs agree (``frames``)."""

    offset: float
    cover_a: float
    cover_b: float
    range_a: tuple[float, float]
    range_b: tuple[float, float]
    frames: int


def align_videos(t_a: np.ndarray, t_b: np.ndarray, match_a: np.ndarray, match_b: np.ndarray,
                 tol: float = 0.6) -> Alignment:
    """Align two videos by their matched frames.

    t_a (n_a,), t_b (n_b,) float64: the times of each video's informative frames (black or uniform frames left out
    by the caller); match_a, match_b (m,) int64: positions into t_a and t_b of frame pairs whose vectors match.
    The offset is the one (within ``tol`` seconds) that the most pairs agree on; a frame counts as covered when it
    is in an agreeing pair. No pairs: coverage 0."""
    t_a, t_b = np.asarray(t_a, np.float64), np.asarray(t_b, np.float64)
    match_a, match_b = np.asarray(match_a, np.int64), np.asarray(match_b, np.int64)
    if len(match_a) == 0 or len(t_a) == 0 or len(t_b) == 0:
        return Alignment(0.0, 0.0, 0.0, (0.0, 0.0), (0.0, 0.0), 0)
    offsets = t_b[match_b] - t_a[match_a]
    votes = (np.abs(offsets[:, None] - offsets[None, :]) <= tol).sum(1)
    best = float(np.median(offsets[np.abs(offsets - offsets[np.argmax(votes)]) <= tol]))
    agree = np.abs(offsets - best) <= tol
    fa, fb = np.unique(match_a[agree]), np.unique(match_b[agree])
    ra = (float(t_a[fa].min()), float(t_a[fa].max()))
    rb = (float(t_b[fb].min()), float(t_b[fb].max()))
    return Alignment(best, len(fa) / len(t_a), len(fb) / len(t_b), ra, rb, int(agree.sum()))


def video_kind(al: Alignment, same_bytes: bool = False, cover: float = 0.8, min_frames: int = 3) -> str:
    """exact (same bytes), near (each video covers at least ``cover`` of the other: the same video), contained (one
    video is covered, the other is not: a clip cut from it), or "" (a shared opening, a few alike frames)."""
    if same_bytes:
        return "exact"
    if al.frames < min_frames:
        return ""
    if al.cover_a >= cover and al.cover_b >= cover:
        return "near"
    if al.cover_a >= cover or al.cover_b >= cover:
        return "contained"
    return ""


def blank_frames(vectors: np.ndarray, blanks: np.ndarray, min_score: float = 0.9) -> np.ndarray:
    """Frames that show nothing: vectors (n, d) and the vectors of uniform pictures (black, white, grey) blanks
    (b, d), unit rows -> (n,) bool, True where a frame is within ``min_score`` cosine of a blank picture."""
    if len(blanks) == 0 or len(vectors) == 0:
        return np.zeros(len(vectors), bool)
    return (np.asarray(vectors, np.float32) @ np.asarray(blanks, np.float32).T).max(1) >= min_score

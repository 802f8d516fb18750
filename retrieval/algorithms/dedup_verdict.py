"""The verdict evidence of an image pair, and which refusals count against a group (``retrieval.query.dedup``).

``image_evidence``: the aligned hash bits and the pixel check of two decoded images at their closest alignments.
``refused_like_a_shot``: which refused pairs were refused the way another shot of the scene is (pixels that
agree, frames close together, yet not lying as a copy's would); ``linked_groups`` counts them against a group,
while a refusal that two compounded transforms explain (two crops far apart, a crop of a screenshot, no
alignment) or pixels that differ somewhere (a heavy watermark) counts for nothing. Pure functions.
"""
from __future__ import annotations

import numpy as np

from retrieval.algorithms.dedup import ImageThresholds, pair_kind, pixels_agree, pixels_alike
from retrieval.algorithms.dedup_image import best_alignments, same_pixels
from retrieval.algorithms.dedup_pixels import FAILED, check_pair, colour_axis


def image_evidence(ea: tuple, eb: tuple, t: ImageThresholds) -> tuple[int, tuple | None]:
    """Aligned hash bits of two decoded images and, when within ``t.similar_bits``, the pixel check: the first of
    the closest alignments, and of the whole pictures one on the other (the hashes of a heavily watermarked or
    recoloured copy may align its crops better), whose pixels agree (within ``t.near_bits``), in plain grey or else
    along the pair's colour axis (``colour_axis``: shapes that differ from their ground in hue, not brightness),
    else the best of the others (pixels alike first, then fewest differing tiles). ea, eb: (pixels (H, W, 3)
    uint8, views (v, 2), bank (b, 2) uint64, view_geometry (v, 5), bank_geometry (b, 5)), as
    ``hash_bank_geometry`` gives them. Returns (bits, the pixel check as a tuple, or None when the hashes are too
    far apart to check)."""
    aligned = best_alignments(ea[1], ea[2], eb[1], eb[2])
    bits = int(aligned[0, 0])
    if bits > t.similar_bits:
        return bits, None
    if not ((aligned[:, 2] == 0) & (aligned[:, 3] == 0)).any():  # the whole pictures too (the first view and entry)
        aligned = np.vstack([aligned, [bits, 0, 0, 0]])
    best = FAILED
    for axis in (None, colour_axis(ea[0], eb[0])):   # plain grey, then the pair's own colour axis
        for _, way, i, j in aligned:
            x, y = (ea, eb) if way == 0 else (eb, ea)
            check = check_pair(x[0], x[3][i], y[0], y[4][j], axis=axis)
            if bits <= t.near_bits and pixels_agree(check, t):
                return bits, tuple(check)
            best = min(best, check, key=lambda c: (not pixels_alike(c, t), c.worst_tile))
    return bits, tuple(best)


def pair_verdict(ea: tuple | None, eb: tuple | None, clip: float, t: ImageThresholds) -> tuple[str, tuple] | None:
    """(kind, or "" when not a duplicate; evidence (8,): bits, same pixels, then the pixel check or NaN) of an image
    pair from its pictures' evidence (as ``image_evidence`` takes it) and CLIP cosine; None when either is None
    (a picture that could not be read)."""
    if ea is None or eb is None:
        return None
    same = same_pixels(ea[0], eb[0])
    bits, pixels = (0, None) if same else image_evidence(ea, eb, t)
    return pair_kind(clip, bits, same, t, pixels), (bits, float(same), *(pixels or (np.nan,) * 6)[:6])


def refused_like_a_shot(kind: np.ndarray, evidence: np.ndarray, t: ImageThresholds) -> np.ndarray:
    """kind (m,) int8 verdict codes (0: refused), evidence (m, 8) float64 (bits, same, ncc, worst tile, overlap,
    offset, turn, agree) -> (m,) bool: refused pairs whose pixels agree, as a whole (``t.pixel_ncc``,
    ``t.pixel_tile``) and tile by tile (``t.pixel_agree``; not measured: not checked), with frame centres at most
    ``t.similar_offset`` apart: refused only for where the frames lie, as another shot of the scene is. A refusal
    for pixels that differ somewhere (a heavy watermark, a crop of a screenshot) says nothing about the group."""
    ev = np.asarray(evidence, np.float64)
    agree = ev[:, 7] if ev.shape[1] > 7 else np.full(len(ev), np.nan)
    with np.errstate(invalid="ignore"):
        return ((np.asarray(kind) == 0) & (ev[:, 2] >= t.pixel_ncc) & (ev[:, 3] <= t.pixel_tile)
                & ~(agree < t.pixel_agree) & (ev[:, 5] <= t.similar_offset))

"""The pixel check of an image pair: after the hashes' coarse alignment, align the pixels and compare them.

Perceptual hashes at their best alignment (``dedup_image``) let through pairs that are alike but not the same
picture: another shot of a scene (objects moved a little), another drawing of one small shape on a plain ground
(two 80% crop windows, each centred on its shape, hash alike). So a pair the hashes accept is checked again:

1. ``refine_alignment``: start from the hashes' alignment (a box of one picture against a box, maybe turned, of the
   other) and refine it to an affine map by maximising the correlation of the grey pixels (OpenCV's ECC, coarse on
   blurred pixels then finer), at the resolution of the coarser of the two boxes (at most ``side`` px);
2. ``pixel_agreement``: compare the aligned pixels: the normalised cross-correlation over the box, and the worst
   tile's mean squared difference of the normalised pixels (something moved, added or removed shows in some
   tile even when the whole agrees);
3. ``frame_overlap`` and ``frame_pose``: carry one picture's whole frame into the other's by the refined map: a
   copy (resized, cropped by up to 20%, framed) lies wholly inside the other picture, or the other inside it, and a
   turned copy keeps its centre on the other's; two shapes aligned by crops each centred on its shape do not, nor
   another shot whose objects moved (its frame sticks out of the other's by the objects' move).

Pure functions: arrays in, arrays out. OpenCV (``cv2``) is imported lazily (the ``dedup`` extra).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image

from retrieval.errors import InvalidInput


class PixelCheck(NamedTuple):
    """``ncc``: correlation of the aligned grey pixels (-1..1); ``worst_tile``: the largest tile mean of squared
    differences of the normalised pixels (0 = same; 2 = unrelated); ``overlap``: the larger share of either picture
    covered by the other once aligned (0..1); ``offset``: how far A's frame centre lands from B's, over B's larger
    side; ``turn``: the map's rotation in degrees (``frame_pose``)."""

    ncc: float
    worst_tile: float
    overlap: float
    offset: float = np.nan
    turn: float = np.nan


FAILED = PixelCheck(-1.0, 4.0, 0.0, 1.0, 0.0)


def _cv2():
    try:
        import cv2  # optional: the dedup extra
    except ImportError:
        raise InvalidInput("comparing images needs OpenCV: pip install 'clipdex[dedup]'") from None
    return cv2


def box_map(geometry: np.ndarray, size: tuple[int, int], side: int) -> np.ndarray:
    """(3, 3) float64: picture coordinates -> the coordinates of a ``side`` x ``side`` patch of the box.

    geometry (5,): (angle, left, top, right, bottom), the box in the picture turned by ``angle`` degrees
    counter-clockwise about its centre (PIL's ``Image.rotate``); size: the picture's (width, height)."""
    angle, left, top, right, bottom = (float(v) for v in geometry)
    cx, cy = size[0] / 2, size[1] / 2
    th = np.radians(angle)
    c, s = np.cos(th), np.sin(th)
    turn = np.array([[c, s, cx - c * cx - s * cy], [-s, c, cy + s * cx - c * cy], [0, 0, 1]])
    scale = np.array([[side / (right - left), 0, -left * side / (right - left)],
                      [0, side / (bottom - top), -top * side / (bottom - top)], [0, 0, 1]])
    return scale @ turn


def frame_overlap(a_to_b: np.ndarray, size_a: tuple[int, int], size_b: tuple[int, int]) -> float:
    """How much of one frame the other covers: a_to_b (3, 3) maps A's picture coordinates to B's; sizes (w, h).
    Returns max(overlap / area of A, overlap / area of B) (0..1)."""
    cv2 = _cv2()
    w, h = size_a
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], np.float64) @ np.asarray(a_to_b).T
    quad = (corners[:, :2] / corners[:, 2:]).astype(np.float32)
    frame_b = np.array([[0, 0], [size_b[0], 0], [size_b[0], size_b[1]], [0, size_b[1]]], np.float32)
    area_a = abs(float(cv2.contourArea(quad)))
    if area_a <= 0:
        return 0.0
    inter, _ = cv2.intersectConvexConvex(quad, frame_b)
    return float(max(inter / area_a, inter / (size_b[0] * size_b[1])))


def frame_pose(a_to_b: np.ndarray, size_a: tuple[int, int], size_b: tuple[int, int]) -> tuple[float, float]:
    """Where A's frame lands in B: a_to_b (3, 3) maps A's picture coordinates to B's; sizes (w, h). Returns
    (offset, turn): the distance from the image of A's centre to B's centre over B's larger side, and the map's
    rotation in degrees. A copy turned about its centre (how pictures are turned) has offset ~0 and a turn."""
    m = np.asarray(a_to_b, np.float64)
    c = m @ np.array([size_a[0] / 2, size_a[1] / 2, 1.0])
    offset = np.hypot(c[0] / c[2] - size_b[0] / 2, c[1] / c[2] - size_b[1] / 2) / max(size_b)
    return float(offset), float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))


def refine_alignment(grey_a: np.ndarray, grey_b: np.ndarray, init: np.ndarray, iterations: int = 60) -> np.ndarray:
    """Refine an affine map so that grey_b(map(x)) ~ grey_a(x): grey (h, w) float32 pictures, init (2, 3) float32
    -> (2, 3) float32 (the initial map when the refinement does not converge). Blurred, less blurred, sharp."""
    cv2 = _cv2()
    warp = np.asarray(init, np.float32).copy()
    side = max(grey_a.shape)
    steps = [(cv2.GaussianBlur(grey_a, (0, 0), side / blur), cv2.GaussianBlur(grey_b, (0, 0), side / blur),
              iterations, 1e-5) for blur in (16, 48)] + [(grey_a, grey_b, iterations // 2, 1e-6)]
    for a, b, n, eps in steps:
        try:
            _, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_AFFINE,
                                           (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, n, eps), None, 1)
        except cv2.error:  # no convergence (a flat picture): keep what we have
            break
    return warp


def pixel_agreement(grey_a: np.ndarray, grey_b: np.ndarray, warp: np.ndarray, tiles: int = 8) -> tuple[float, float]:
    """Compare grey_a (s, s) with grey_b brought onto it by warp (2, 3) (grey_b(warp(x)) ~ grey_a(x)).

    Returns (ncc, worst_tile): the correlation of the pixels both cover, and the largest mean squared difference of
    the normalised pixels over a tiles x tiles grid (tiles less than half covered left out). Less than half of
    grey_a covered: (-1, 4)."""
    cv2 = _cv2()
    s = grey_a.shape[0]
    flags = cv2.WARP_INVERSE_MAP
    back = cv2.warpAffine(grey_b, warp, (s, s), flags=cv2.INTER_LINEAR + flags)
    mask = cv2.warpAffine(np.ones_like(grey_b), warp, (s, s), flags=cv2.INTER_NEAREST + flags) > 0.5
    if mask.mean() < 0.5:
        return -1.0, 4.0
    u, v = grey_a[mask], back[mask]
    u = (u - u.mean()) / (u.std() + 1e-3)
    v = (v - v.mean()) / (v.std() + 1e-3)
    err = np.zeros((s, s), np.float32)
    err[mask] = (u - v) ** 2
    t = s // tiles
    count = mask[:t * tiles, :t * tiles].reshape(tiles, t, tiles, t).sum(axis=(1, 3))
    sums = err[:t * tiles, :t * tiles].reshape(tiles, t, tiles, t).sum(axis=(1, 3))
    full = count >= 0.5 * t * t
    return float((u * v).mean()), float((sums[full] / count[full]).max()) if full.any() else 4.0


def check_pair(pixels_a: np.ndarray, geometry_a: np.ndarray, pixels_b: np.ndarray, geometry_b: np.ndarray,
               side: int = 128) -> PixelCheck:
    """The pixel check of one alignment: a box of A (geometry_a (5,)) against a box of B (geometry_b (5,)), pixels
    (H, W, 3) uint8 (those the geometry refers to). The patch side is the coarser box's, 32..``side`` px."""
    cv2 = _cv2()
    size_a, size_b = (pixels_a.shape[1], pixels_a.shape[0]), (pixels_b.shape[1], pixels_b.shape[0])
    ext = lambda g: max(g[3] - g[1], g[4] - g[2])  # noqa: E731
    s = int(np.clip(min(ext(geometry_a), ext(geometry_b)), 32, side)) // 8 * 8
    small_a, resize_a = _at_scale(pixels_a, s / ext(geometry_a))
    small_b, resize_b = _at_scale(pixels_b, s / ext(geometry_b))
    map_a = box_map(geometry_a, size_a, s)
    grey_a = cv2.warpAffine(small_a, (map_a @ np.linalg.inv(resize_a))[:2].astype(np.float32), (s, s),
                            flags=cv2.INTER_LINEAR)
    patch_to_b = resize_b @ np.linalg.inv(box_map(geometry_b, size_b, s))  # patch of B's box -> B at that scale
    warp = refine_alignment(grey_a, small_b, patch_to_b[:2].astype(np.float32))
    ncc, worst = pixel_agreement(grey_a, small_b, warp)
    if ncc <= -1.0:
        return FAILED
    a_to_b = np.linalg.inv(resize_b) @ np.vstack([warp.astype(np.float64), [0, 0, 1]]) @ map_a
    return PixelCheck(ncc, worst, frame_overlap(a_to_b, size_a, size_b), *frame_pose(a_to_b, size_a, size_b))


def _at_scale(pixels: np.ndarray, f: float) -> tuple[np.ndarray, np.ndarray]:
    """The grey picture resized by about ``f`` (antialiased), and the (3, 3) map from picture to resized."""
    h, w = pixels.shape[:2]
    size = (max(8, round(w * f)), max(8, round(h * f)))
    grey = Image.fromarray(np.asarray(pixels, np.uint8)).convert("L").resize(size, Image.BILINEAR)
    return np.asarray(grey, np.float32), np.diag([size[0] / w, size[1] / h, 1.0])

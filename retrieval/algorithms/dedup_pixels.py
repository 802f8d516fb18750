"""The pixel check of an image pair: after the hashes' coarse alignment, align the pixels and compare them.

Perceptual hashes at their best alignment (``dedup_image``) let through pairs that are alike but not the same
picture: another shot of a scene (objects moved a little), another drawing of one small shape on a plain ground
(two 80% crop windows, each centred on its shape, hash alike). So a pair the hashes accept is checked again:

1. ``refine_alignment``: start from the hashes' alignment (a box of one picture against a box, maybe turned, of the
   other) and refine it to an affine map by maximising the correlation of the grey pixels (OpenCV's ECC, coarse on
   blurred pixels then finer), at the resolution of the coarser of the two boxes (at most ``side`` px);
2. ``pixel_agreement``: compare the aligned pixels up to a tone curve fitted from one to the other (a recoloured,
   brightened or contrast-changed copy keeps the order of its tones, not their values): how well the curve
   predicts the pixels, the worst tile's mean squared residual (something moved, added or removed shows in some
   tile even when the whole agrees), and the share of textured tiles that agree on their own (a screenshot's
   uniform frame weighs nothing there; a watermark spoils a few tiles, a moved object or another picture most);
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
    """``ncc``: correlation of the aligned grey pixels, one predicted from the other by a tone curve (-1..1, 1 = the
    same up to tones; ``pixel_agreement``); ``worst_tile``: the largest tile mean of squared residuals over the
    spread (0 = same); ``overlap``: the larger share of either picture covered by the other once aligned (0..1);
    ``offset``: how far A's frame centre lands from B's, over B's larger side; ``turn``: the map's rotation in
    degrees (``frame_pose``); ``agree``: the share of textured tiles whose pixels agree (0..1); ``hue``: how far
    the hues of the parts coloured in both pictures lie apart, in degrees (``hue_shift``; NaN: too little colour);
    ``colour``: how much of the coloured parts' colour no global colour change explains (``colour_residual``, 0 = all
    of it explained; NaN: too little colour)."""

    ncc: float
    worst_tile: float
    overlap: float
    offset: float = np.nan
    turn: float = np.nan
    agree: float = np.nan
    hue: float = np.nan
    colour: float = np.nan


LUMA = np.array([0.299, 0.587, 0.114], np.float32)   # ITU-R 601 luma: PIL's grey
COLOUR_BLUR = 32   # colour_residual compares the colours blurred by the patch side over this
FAILED = PixelCheck(-1.0, 4.0, 0.0, 1.0, 0.0, 0.0, 180.0, 1.0)


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


def tone_fit(x: np.ndarray, y: np.ndarray, bins: int = 24) -> np.ndarray:
    """y as a tone curve of x: the mean of y over each of ``bins`` equal ranges of x (any brightness, contrast,
    gamma or clipping change of a grey picture is one). x, y (n,) float32 -> (n,) float32."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    lo, hi = float(x.min()), float(x.max()) + 1e-6
    b = np.clip(np.nan_to_num((x - lo) / (hi - lo) * bins), 0, bins - 1).astype(np.int64)
    count = np.bincount(b, minlength=bins)
    return (np.bincount(b, y, minlength=bins) / np.maximum(count, 1)).astype(np.float32)[b]


def pixel_agreement(grey_a: np.ndarray, grey_b: np.ndarray, warp: np.ndarray, tiles: int = 8,
                    local: float = 0.6, texture: float = 4.0) -> tuple[float, float, float]:
    """Compare grey_a (s, s) with grey_b brought onto it by warp (2, 3) (grey_b(warp(x)) ~ grey_a(x)), up to a tone
    curve (``tone_fit``, fitted both ways, the better kept: a recoloured or brightened copy keeps its tones' order
    but not their values).

    Returns (fit, worst_tile, agree) over the pixels both cover: ``fit``, the correlation of one picture with its
    tone-curve prediction from the other (1: the same picture up to tones); ``worst_tile``, the largest mean squared
    residual over a tiles x tiles grid (tiles less than half covered left out), residuals over the predicted
    picture's spread (1st to 99th percentile); ``agree``, how many textured tiles (wholly covered, grey std above
    ``texture`` levels) agree (prediction and picture correlate at least ``local``): the share of those textured in
    either picture, or, when higher, the smaller of the share of one picture's own textured tiles (the picture where
    it is larger) and the share of all covered tiles that do not disagree. A large uniform frame (a screenshot's)
    dominates ``fit`` and ``worst_tile``; ``agree`` looks inside it, tile by tile. A watermark adds texture to a
    few tiles of one picture only; an object moved spoils the tiles that have something in them, another picture
    in the same frame most tiles inside it. Less than half of grey_a covered: (-1, 4, 0)."""
    cv2 = _cv2()
    s = grey_a.shape[0]
    flags = cv2.WARP_INVERSE_MAP
    back = cv2.warpAffine(grey_b, warp, (s, s), flags=cv2.INTER_LINEAR + flags)
    mask = cv2.warpAffine(np.ones_like(grey_b), warp, (s, s), flags=cv2.INTER_NEAREST + flags) > 0.5
    if mask.mean() < 0.5:
        return -1.0, 4.0, 0.0
    u, v = grey_a[mask], back[mask]
    best = (-1.0, u, u)
    for x, y in ((u, v), (v, u)):
        predicted = tone_fit(x, y)
        fit = float(np.sqrt(max(0.0, 1.0 - (y - predicted).var() / max(float(y.var()), 1e-6))))
        if fit > best[0]:
            best = (fit, predicted, y)
    fit, predicted, actual = best
    spread = max(float(np.percentile(actual, 99) - np.percentile(actual, 1)), 8.0)
    t = s // tiles

    def tiled(values: np.ndarray) -> np.ndarray:   # (s, s) -> (tiles * tiles, t * t), a row per tile
        full = np.zeros((s, s), np.float32)
        full[mask] = values
        return full[:t * tiles, :t * tiles].reshape(tiles, t, tiles, t).transpose(0, 2, 1, 3).reshape(tiles ** 2, -1)

    cover = mask[:t * tiles, :t * tiles].reshape(tiles, t, tiles, t).transpose(0, 2, 1, 3).reshape(tiles ** 2, -1)
    p, a = tiled(predicted), tiled(actual)
    count = cover.sum(axis=1)
    half = count >= 0.5 * t * t
    worst = float(((((p - a) / spread) ** 2).sum(axis=1)[half] / count[half]).max()) if half.any() else 4.0
    whole = cover.all(axis=1)
    sp, sa = p.std(axis=1), a.std(axis=1)
    ok = ((p - p.mean(axis=1, keepdims=True)) * (a - a.mean(axis=1, keepdims=True))).mean(axis=1) / (
        np.maximum(sp, 1.0) * np.maximum(sa, 1.0)) >= local
    textured = [whole & (sd > texture) for sd in (sp, sa)]
    either = textured[0] | textured[1]
    if not either.any():
        return fit, worst, 1.0
    one_side = max(float(ok[m].mean()) for m in textured if m.any()) if any(m.any() for m in textured) else 1.0
    few_differ = 1.0 - float((either & ~ok).sum()) / max(int(whole.sum()), 1)
    return fit, worst, max(float(ok[either].mean()), min(one_side, few_differ))


def check_pair(pixels_a: np.ndarray, geometry_a: np.ndarray, pixels_b: np.ndarray, geometry_b: np.ndarray,
               side: int = 128, axis: np.ndarray | None = None) -> PixelCheck:
    """The pixel check of one alignment: a box of A (geometry_a (5,)) against a box of B (geometry_b (5,)), pixels
    (H, W, 3) uint8 (those the geometry refers to), both seen as grey along ``axis`` (3,) (default ``LUMA``; see
    ``colour_axis``). The patch side is the coarser box's, 32..``side`` px."""
    cv2 = _cv2()
    size_a, size_b = (pixels_a.shape[1], pixels_a.shape[0]), (pixels_b.shape[1], pixels_b.shape[0])
    ext = lambda g: max(g[3] - g[1], g[4] - g[2])  # noqa: E731
    s = int(np.clip(min(ext(geometry_a), ext(geometry_b)), 32, side)) // 8 * 8
    colour = LUMA if axis is None else axis
    rgb_a, resize_a = _at_scale(pixels_a, s / ext(geometry_a))
    rgb_b, resize_b = _at_scale(pixels_b, s / ext(geometry_b))
    small_a, small_b = rgb_a @ colour, rgb_b @ colour
    map_a = box_map(geometry_a, size_a, s)
    to_patch_a = (map_a @ np.linalg.inv(resize_a))[:2].astype(np.float32)
    grey_a = cv2.warpAffine(small_a, to_patch_a, (s, s), flags=cv2.INTER_LINEAR)
    patch_to_b = resize_b @ np.linalg.inv(box_map(geometry_b, size_b, s))  # patch of B's box -> B at that scale
    warp = refine_alignment(grey_a, small_b, patch_to_b[:2].astype(np.float32))
    fit, worst, agree = pixel_agreement(grey_a, small_b, warp)
    if fit <= -1.0:
        return FAILED
    a_to_b = np.linalg.inv(resize_b) @ np.vstack([warp.astype(np.float64), [0, 0, 1]]) @ map_a
    inverse = cv2.WARP_INVERSE_MAP
    colour_a = cv2.warpAffine(rgb_a, to_patch_a, (s, s), flags=cv2.INTER_LINEAR)
    colour_b = cv2.warpAffine(rgb_b, warp, (s, s), flags=cv2.INTER_LINEAR + inverse)
    covered = cv2.warpAffine(np.ones(small_b.shape, np.float32), warp, (s, s), flags=cv2.INTER_NEAREST + inverse) > 0.5
    x, y = colour_a[covered], colour_b[covered]
    sigma = s / COLOUR_BLUR   # the colours' coarse layout: JPEG keeps chroma at half resolution, quantised coarsely
    inner = cv2.erode(covered.astype(np.uint8), np.ones((2 * round(2 * sigma) + 1,) * 2, np.uint8)) > 0
    coarse = [cv2.GaussianBlur(c, (0, 0), sigma)[inner] for c in (colour_a, colour_b)]
    return PixelCheck(fit, worst, frame_overlap(a_to_b, size_a, size_b), *frame_pose(a_to_b, size_a, size_b), agree,
                      hue_shift(x, y), colour_residual(*coarse))


def hue_shift(x: np.ndarray, y: np.ndarray, chroma: float = 30.0, least: float = 0.02) -> float:
    """How far apart the hues of two aligned pictures' coloured parts lie: x, y (n, 3) RGB pixels (0..255) -> the
    chroma-weighted mean hue difference, in degrees (0..180), over the pixels with at least ``chroma`` (opponent
    colour magnitude, 0..~255) in both; NaN when under ``least`` of the pixels are coloured in both (grey or pale
    pictures: nothing to compare). A recoloured copy (brighter, more or less saturated, a colour cast) keeps the
    hue of its coloured parts; another drawing of the shape in another colour does not, though its grey levels may
    follow the first's by a tone curve."""
    def polar(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        o = opponent(rgb)
        return np.hypot(o[:, 0], o[:, 1]), np.degrees(np.arctan2(o[:, 1], o[:, 0]))

    (ca, ha), (cb, hb) = polar(x), polar(y)
    both = (ca >= chroma) & (cb >= chroma)
    if both.sum() < max(16, least * len(ca)):
        return float("nan")
    diff = np.abs((ha[both] - hb[both] + 180.0) % 360.0 - 180.0)
    weight = np.minimum(ca[both], cb[both])
    return float((diff * weight).sum() / weight.sum())


def opponent(rgb: np.ndarray) -> np.ndarray:
    """(n, 3) RGB -> (n, 2) float32 opponent colour (red-green/blue axis, yellow-blue axis): grey is (0, 0), its
    length the chroma (0..~255), its angle the hue."""
    rgb = np.asarray(rgb, np.float32).reshape(-1, 3)
    return np.stack([rgb[:, 0] - 0.5 * (rgb[:, 1] + rgb[:, 2]), 0.8660254 * (rgb[:, 1] - rgb[:, 2])], axis=1)


def colour_residual(x: np.ndarray, y: np.ndarray, coloured: float = 40.0, least: float = 0.02) -> float:
    """How much of two aligned pictures' colour no global colour change explains: x, y (n, 3) RGB pixels (0..255)
    -> 0..~1.5, NaN when under ``least`` of the pixels have ``coloured`` chroma in either picture.

    A recoloured copy (saturation, a colour cast) changes every pixel's opponent colour the same way: o_y ~ s o_x
    + t with s >= 0, and the other way round. Fitted by least squares each way, the residual at the pixels coloured
    in either picture, over their chroma, has a small median both ways; the larger is returned. Another drawing
    of the shape in another colour (a grey shape where the other is purple, on grounds of their own tints) leaves
    most of one side's colour unexplained, though its grey levels follow the other's by a tone curve."""
    ox, oy = opponent(x), opponent(y)
    cx, cy = np.hypot(ox[:, 0], ox[:, 1]), np.hypot(oy[:, 0], oy[:, 1])
    sel = (cx >= coloured) | (cy >= coloured)
    if sel.sum() < max(16, least * len(ox)):
        return float("nan")
    scale = np.maximum(np.maximum(cx, cy)[sel], 1.0)
    worst = 0.0
    for u, v in ((ox, oy), (oy, ox)):
        u, v = u - u.mean(axis=0), v - v.mean(axis=0)
        s = float(np.clip((u * v).sum() / max(float((u * u).sum()), 1e-6), 0.0, 3.0))
        r = v - s * u
        worst = max(worst, float(np.median(np.hypot(r[sel, 0], r[sel, 1]) / scale)))
    return worst


def colour_axis(pixels_a: np.ndarray, pixels_b: np.ndarray, step: int = 3) -> np.ndarray:
    """The unit RGB direction (3,) float32 along which two pictures' colours vary most (the first principal axis of
    their pooled pixels (H, W, 3) uint8, every ``step``-th row and column), signed to brighten with luminance: a
    grey to compare them in besides ``LUMA``. A pink shape on a green ground of the same luminance vanishes in
    plain grey, not along this axis."""
    x = np.concatenate([np.asarray(p, np.float32)[::step, ::step].reshape(-1, 3) for p in (pixels_a, pixels_b)])
    _, vectors = np.linalg.eigh(np.cov(x, rowvar=False) + 1e-3 * np.eye(3))
    axis = vectors[:, -1]
    return (axis if axis @ LUMA >= 0 else -axis).astype(np.float32)


def _at_scale(pixels: np.ndarray, f: float) -> tuple[np.ndarray, np.ndarray]:
    """The picture resized by about ``f`` (antialiased), (h, w, 3) float32 (seen along a colour axis by ``@
    axis``: ``colour_axis``), and the (3, 3) map from picture to resized."""
    h, w = pixels.shape[:2]
    size = (max(8, round(w * f)), max(8, round(h * f)))
    small = Image.fromarray(np.asarray(pixels, np.uint8)).resize(size, Image.BILINEAR)
    return np.asarray(small, np.float32), np.diag([size[0] / w, size[1] / h, 1.0])

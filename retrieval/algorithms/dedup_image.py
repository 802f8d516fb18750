"""The second signal for image pairs: perceptual hashes (imagehash's pHash and dHash) over a bank of alignments.

A CLIP cosine cannot tell "this red circle, re-saved" from "another drawing of a red circle"; a perceptual hash of
the pixels can, as long as the two pictures are aligned. So each image gets

- its *views*: the whole picture, its centre, and the picture with some of its uniform border bands peeled off
  (``trim_boxes``: a screenshot's frame and title bar, letterbox padding);
- its *bank*: the whole picture, crops (90% windows at 3 x 3 positions, 80% at 5 x 5), and the centres of the
  picture and of its small turns (+-4, 8, 12 degrees; a turned copy's centre has no filled corners),
  with where each was taken (``hash_bank_geometry``: the pixel check, ``dedup_pixels``, starts from it),

each hashed as a (pHash, dHash) pair of 64-bit codes. Two images are as far apart as the best match of one's views
against the other's bank, both ways (``aligned_distance``): the larger of the pHash and dHash distances, in bits.
A re-encoded, resized, cropped (up to 20%), turned, recoloured, watermarked or framed copy lands within a few bits;
another drawing of the same shapes does not. ``imagehash`` is imported lazily (the ``dedup`` extra).
"""
from __future__ import annotations

import itertools

import numpy as np
from PIL import Image

from retrieval.algorithms.hamming import popcount
from retrieval.errors import InvalidInput

CROPS = ((0.9, 3), (0.8, 5))  # kept fraction of each side, positions along each axis
TURNS = (4, 8, 12)      # degrees, both ways
TURN_KEEP = 0.8         # of each side, kept around the centre of a turned picture (its corners are filled)
SIDE = 512              # images are trimmed and hashed from at most this size (hashes read 32 x 32 anyway)
PROBE_SIDE = 64         # probe codes (``probe_codes``) are taken from views reduced to this size
PROBE_DECODE = (4 * PROBE_SIDE, 4 * PROBE_SIDE)   # files are decoded (a JPEG drafted) no smaller than this for them


def side_cuts(pixels: np.ndarray, tol: int = 24, max_bands: int = 2) -> list[list[int]]:
    """Where each side's uniform border bands end: [left, top, right, bottom] lists of pixel offsets from that side.

    pixels (H, W, 3) uint8. A side peels its border line while the line is within ``tol`` (per channel) of the
    colour of the band it is peeling (the band's first line's mean colour) and records a cut where the colour
    changes; a side whose line is not uniform waits while the others peel (a title bar on top makes the left column
    uneven until the top has peeled it). At most ``max_bands`` bands per side."""
    px = np.asarray(pixels, np.int16)
    h, w = px.shape[:2]
    box = [0, 0, w, h]  # left, top, right, bottom
    colour: list = [None] * 4
    cuts: list[list[int]] = [[], [], [], []]

    def line(side: int) -> np.ndarray:
        left, top, right, bottom = box
        return (px[top:bottom, left], px[top, left:right], px[top:bottom, right - 1], px[bottom - 1, left:right])[side]

    moved = True
    while moved and box[2] - box[0] > 8 and box[3] - box[1] > 8:
        moved = False
        for side in range(4):
            if len(cuts[side]) >= max_bands:
                continue
            values = line(side)
            if colour[side] is not None and np.abs(values - colour[side]).max() > tol:
                cuts[side].append(box[side] if side < 2 else (w, h)[side - 2] - box[side])
                colour[side] = None
            if colour[side] is None:
                if len(cuts[side]) >= max_bands or (values.max(axis=0) - values.min(axis=0)).max() > tol:
                    continue
                colour[side] = values.mean(axis=0)
            box[side] += 1 if side < 2 else -1
            moved = True
    return cuts


def trim_boxes(pixels: np.ndarray, tol: int = 24) -> list[tuple[int, int, int, int]]:
    """Boxes (left, top, right, bottom) of the picture without some of its uniform border bands: every combination
    of each side's cuts (``side_cuts``: none, after its first band, after its second), the whole picture left out,
    boxes under a tenth of the picture dropped. pixels (H, W, 3) uint8."""
    h, w = pixels.shape[:2]
    cuts = side_cuts(pixels, tol)
    boxes = set()
    for left, top, right, bottom in itertools.product(*([0, *c] for c in cuts)):
        box = (left, top, w - right, h - bottom)
        if box != (0, 0, w, h) and (box[2] - box[0]) * (box[3] - box[1]) >= 0.1 * h * w and min(
                box[2] - box[0], box[3] - box[1]) >= 8:
            boxes.add(box)
    return sorted(boxes)


def hash_codes(images: list[Image.Image]) -> np.ndarray:
    """Images -> (n, 2) uint64: the pHash and dHash codes (64 bits each) of each, bit for bit imagehash's
    ``phash`` and ``dhash`` (hash size 8), computed for the whole batch at once: each picture in grey resized
    (Lanczos) to 32 x 32, a 2-D DCT (type II, unnormalised), the 8 x 8 lowest frequencies against their median;
    and resized to 9 x 8, each pixel against its left neighbour. Bits are read row by row, the first the highest."""
    try:
        import imagehash  # noqa: F401 - optional: the dedup extra (brings scipy)
        import scipy.fftpack  # imagehash's own dependency: the same DCT, for a batch at once
    except ImportError:
        raise InvalidInput("comparing images needs imagehash: pip install 'clipdex[dedup]'") from None

    if not images:
        return np.zeros((0, 2), np.uint64)
    grey = [img.convert("L") for img in images]
    small = np.stack([np.asarray(g.resize((32, 32), Image.LANCZOS)) for g in grey])
    dct = scipy.fftpack.dct(scipy.fftpack.dct(small, axis=1), axis=2)[:, :8, :8].reshape(len(images), 64)
    phash = dct > np.median(dct, axis=1, keepdims=True)
    row = np.stack([np.asarray(g.resize((9, 8), Image.LANCZOS)) for g in grey])
    dhash = (row[:, :, 1:] > row[:, :, :-1]).reshape(len(images), 64)
    weights = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)
    return np.stack([(phash.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64),
                     (dhash.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)], axis=1)


def _crop_boxes(w: int, h: int) -> list[tuple[int, int, int, int]]:
    out = []
    for keep, steps in CROPS:
        cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
        grid = np.linspace(0.0, 1.0, steps)
        for fy in grid:
            for fx in grid:
                x, y = round((w - cw) * fx), round((h - ch) * fy)
                out.append((x, y, x + cw, y + ch))
    return out


def hash_bank(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """An image -> (views (v, 2) uint64, bank (b, 2) uint64) of (pHash, dHash) codes (see the module docstring).
    Views: the whole picture and its trimmed boxes; bank: the whole picture, its crops and turns (trimmed boxes are
    never matched against trimmed boxes: two drawings of one shape on plain backgrounds trim to the same box)."""
    return hash_bank_geometry(img)[:2]


def hash_bank_geometry(img: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Image.Image]:
    """``hash_bank`` with where each code was taken: (views (v, 2), bank (b, 2) uint64, view_geometry (v, 5),
    bank_geometry (b, 5) float64, the RGB picture the geometry refers to (at most ``SIDE`` px)). A geometry row is
    (angle, left, top, right, bottom): the box of the picture turned by ``angle`` degrees (PIL's rotate)."""
    img = img.convert("RGB")
    if max(img.size) > SIDE:
        img.thumbnail((SIDE, SIDE), Image.BILINEAR)
    w, h = img.size
    centre = _centre_box(w, h)
    view_geo = [(0, 0, 0, w, h), (0, *centre)] + [(0, *box) for box in trim_boxes(np.asarray(img))]
    bank_geo = [(0, 0, 0, w, h)] + [(0, *box) for box in _crop_boxes(w, h)]
    bank_geo += [(sign * deg, *centre) for deg in (0, *TURNS) for sign in (1, -1)]
    turned = {a: img.rotate(a, Image.BICUBIC) if a else img for a, *_ in bank_geo}
    views = hash_codes([img.crop(tuple(g[1:])) for g in view_geo])
    bank = hash_codes([turned[g[0]].crop(tuple(g[1:])) for g in bank_geo])
    return views, bank, np.array(view_geo, np.float64), np.array(bank_geo, np.float64), img


def probe_codes(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """An image -> (views (v, 2), anchors (a, 2) uint64 (pHash, dHash)): a few codes per picture from which
    candidate pairs are found without the model (``retrieval.algorithms.hamming``): a copy has a view within a few
    bits of an anchor of its original, or the reverse. Views as in ``hash_bank`` (the whole picture, its centre,
    its trimmed boxes: a framed copy); anchors: the whole picture (re-encoded, resized, recoloured, watermarked
    copies) and the centres of the picture and of its turns (+-``TURNS`` degrees: a turned copy). Borders are
    found on the picture at up to ``SIDE`` px (a reduced frame's edges blend into bands of their own); each view is
    then reduced to ``PROBE_SIDE`` px and the turns are made in grey at that size: a fraction of ``hash_bank``'s
    work (hashes read 32 x 32 px anyway)."""
    img = img.convert("RGB")
    if max(img.size) > SIDE:
        img.thumbnail((SIDE, SIDE), Image.BILINEAR)
    w, h = img.size
    centre = _centre_box(w, h)
    views = [_reduced(img.crop(box)) for box in [(0, 0, w, h), centre, *trim_boxes(np.asarray(img))]]
    grey = views[0]
    small = _centre_box(*grey.size)
    anchors = [grey, grey.crop(small)] + [grey.rotate(sign * deg, Image.BICUBIC).crop(small)
                                          for deg in TURNS for sign in (1, -1)]
    codes = hash_codes(views + anchors)
    return codes[:len(views)], codes[len(views):]


def _reduced(img: Image.Image) -> Image.Image:
    """Grey, at most ``PROBE_SIDE`` px on its longer side (box filter: a plain mean of each cell)."""
    img = img.convert("L")
    img.thumbnail((PROBE_SIDE, PROBE_SIDE), Image.BOX)
    return img


def _centre_box(w: int, h: int) -> tuple[int, int, int, int]:
    """The central ``TURN_KEEP`` of each side: a turned picture without its filled corners (up to 14 degrees)."""
    dx, dy = round(w * (1 - TURN_KEEP) / 2), round(h * (1 - TURN_KEEP) / 2)
    return dx, dy, w - dx, h - dy


def aligned_distance(views_a: np.ndarray, bank_a: np.ndarray, views_b: np.ndarray, bank_b: np.ndarray) -> int:
    """Bits between two images at their best alignment: min over (a view of one, an entry of the other's bank), both
    ways, of max(pHash bits, dHash bits). views (v, 2) uint64, bank (b, 2) uint64 -> an int in 0..64."""
    return int(best_alignments(views_a, bank_a, views_b, bank_b, top=1)[0, 0])


def best_alignments(views_a: np.ndarray, bank_a: np.ndarray, views_b: np.ndarray, bank_b: np.ndarray,
                    slack: int = 2, top: int = 3) -> np.ndarray:
    """The closest alignments of two images: (n, 4) int64 rows (bits, way, view, entry), fewest bits first, at most
    ``top``, within ``slack`` bits of the best. way 0: a view of A against an entry of B's bank; way 1: the reverse.
    views (v, 2) uint64, bank (b, 2) uint64 (from ``hash_bank``)."""
    rows = []
    for way, (views, bank) in enumerate(((views_a, bank_b), (views_b, bank_a))):
        x = np.bitwise_xor(np.asarray(views, np.uint64)[:, None, :], np.asarray(bank, np.uint64)[None, :, :])
        bits = popcount(x).max(axis=2)
        i, j = np.nonzero(bits <= bits.min() + slack)
        rows.append(np.stack([bits[i, j], np.full(len(i), way), i, j], 1))
    out = np.concatenate(rows).astype(np.int64)
    out = out[np.lexsort((out[:, 1], out[:, 0]))]
    return out[out[:, 0] <= out[0, 0] + slack][:top]


def plain_distance(codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
    """pHash bits between the whole pictures: codes (n, 2), (m, 2) uint64 -> (n, m) int64 (the baseline of a
    perceptual-hash-only tool)."""
    x = np.bitwise_xor(np.asarray(codes_a, np.uint64)[:, None, 0], np.asarray(codes_b, np.uint64)[None, :, 0])
    return popcount(x)


def same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    """Same decoded pixels: (H, W, C) arrays of the same shape and values."""
    return a.shape == b.shape and bool(np.array_equal(a, b))

"""Near-duplicate grouping: candidate pairs from k-NN results, groups from verified pairs, kinds, and the file to keep.

The pipeline (``retrieval.query.dedup``) searches a table's vectors for their nearest neighbours, turns the results
into candidate pairs here (``candidate_pairs``), verifies each pair with a second signal (a perceptual hash over
alignments for images, ``retrieval.algorithms.dedup_image``; frame sequences with times for videos,
``retrieval.algorithms.dedup_video``; word shingles for texts), names its kind (``pair_kind``) and groups the
verified pairs: linked groups (``linked_groups``, the default: every member is verified with most of the members
it was checked against), connected components (``components``) or the stricter clique rule
(``clique_groups``: every two members of a group are a verified pair). Every function is pure: arrays in, arrays out.

Kinds, strongest first: ``exact`` (same bytes or same decoded pixels), ``near`` (the same picture transformed:
re-encoded, resized, cropped, turned, recoloured, watermarked, a screenshot of it), ``similar`` (another shot of the
same scene). ``contained`` (videos only) is a clip cut from a longer video. A pair that is none of them is not a
duplicate, however close its CLIP vectors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("exact", "near", "contained", "similar")  # strongest first
_RANK = {k: i for i, k in enumerate(KINDS)}


@dataclass(frozen=True)
class ImageThresholds:
    """When a candidate pair of images is which kind (calibrated by ``benchmarks/dedup.py``).

    ``near_bits``: the largest aligned perceptual
    hash distance (bits of 64, pHash and dHash each) of the same picture; ``similar_bits`` and ``similar_clip``:
    another shot of the same scene (a looser hash distance, and a CLIP cosine at least this). A pair within
    ``near_bits`` is near only when its pixels, aligned (``retrieval.algorithms.dedup_pixels``), agree up to a tone
    curve: correlation at least ``pixel_ncc``, no tile's mean squared residual (over the spread) above
    ``pixel_tile``, at least ``pixel_agree`` of the textured tiles agreeing on their own, one picture covering at
    least ``overlap`` of the other, and one frame inside the other (covered ``contained``) or turned about its
    centre (centre offset at most ``centred`` of the side, turn at least ``min_turn`` degrees), turned by at most
    ``max_turn`` degrees either way; a contained copy is not turned (at most ``contained_turn`` degrees): a copy
    never has picture beyond the original's frame, another shot whose objects moved does (or its objects fit only
    with a small turn off the centre), and one shape fitted onto another drawing of it is often turned far. A
    similar pair's pixels, when checked, correlate at least ``similar_ncc`` with frames at most ``similar_offset``
    apart and turned by at most ``similar_turn`` degrees (a same-objects layout is further off; one shape on two
    plain grounds fits turned). ``probe_bits`` and ``probe_both``: a pair is also a candidate, whatever its CLIP
    cosine, when a probe code of one (``dedup_image.probe_codes``) is within ``probe_bits`` pHash bits of the other's
    and within ``probe_both`` bits on both hashes (turned, recoloured and framed copies move CLIP vectors most).
    ``same_frame_*``: a copy lying unmoved on the other picture (covered ``contained``, centres at most
    ``same_frame_offset`` apart, turned at most ``same_frame_turn`` degrees) can differ only by an edit (a heavy
    watermark, strong compression): its pixels need correlate only ``same_frame_ncc``, with no tile above
    ``same_frame_tile`` and ``same_frame_agree`` of the textured tiles agreeing (another shot's moved objects move
    its frame; measured on both seeds of ``benchmarks/dedup.py``: recall up, precision unchanged). ``pixel_hue``:
    the parts coloured in both pictures may differ in hue by at most this many degrees (``dedup_pixels.hue_shift``)
    for a near or similar pair: a recoloured copy keeps its hues (the strongest colour shift of ``benchmarks/dedup.py``
    moves them by up to 48 degrees), another drawing of the shape in other colours need not, though its grey
    levels follow the first's by a tone curve (``benchmarks/dedup_files.py``: 5 of 22 false near pairs among 1,000
    generated scenes; the others have too little colour in common to compare). ``pixel_colour``: at most this share
    of the coloured parts' colour (blurred to the coarse layout JPEG keeps) may be left unexplained by one global
    colour change, saturation and cast (``dedup_pixels.colour_residual``), for a near or similar pair: a grey shape
    is not a recolouring of a purple one, though neither has colour in common with the other to compare hues
    (no copy of either seed of ``benchmarks/dedup.py`` is refused for it).
    Calibrated on ``benchmarks/dedup.py --seed 0`` (12 originals) and checked
    on ``--seed 1``."""

    pixel_hue: float = 60.0
    pixel_colour: float = 0.6
    near_bits: int = 16
    similar_bits: int = 16
    similar_clip: float = 0.90
    pixel_ncc: float = 0.95
    pixel_tile: float = 0.05
    pixel_agree: float = 0.9
    overlap: float = 0.9
    contained: float = 0.995
    centred: float = 0.01
    min_turn: float = 1.8
    max_turn: float = 15.0
    contained_turn: float = 1.0
    similar_ncc: float = 0.85
    similar_offset: float = 0.08
    similar_turn: float = 5.0
    probe_bits: int = 8
    probe_both: int = 14
    same_frame_offset: float = 0.002
    same_frame_turn: float = 0.5
    same_frame_ncc: float = 0.90
    same_frame_tile: float = 0.10
    same_frame_agree: float = 0.75


def candidate_pairs(ids: np.ndarray, D: np.ndarray, I: np.ndarray, min_score: float,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """k-NN results -> candidate pairs.

    ids (q,) int64: the query rows' ids; D (q, k) float32 scores and I (q, k) int64 neighbour ids (padded with -1).
    Returns (pairs (m, 2) int64 with pairs[:, 0] < pairs[:, 1], each pair once, sorted; scores (m,) float32, the
    best score seen for the pair). Self matches, padding and scores below ``min_score`` are dropped."""
    ids = np.asarray(ids, np.int64)
    D = np.asarray(D, np.float32)
    I = np.asarray(I, np.int64)
    a = np.broadcast_to(ids[:, None], I.shape)
    keep = (I >= 0) & (I != a) & (D >= min_score) & np.isfinite(D)
    lo, hi = np.minimum(a[keep], I[keep]), np.maximum(a[keep], I[keep])
    return merge_pairs(np.stack([lo, hi], 1), D[keep])


def merge_pairs(pairs: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pairs (m, 2) int64 (a < b) with scores (m,) -> the same pairs once each (the best score), sorted by (a, b)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    scores = np.asarray(scores, np.float32).reshape(-1)
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    order = np.lexsort((-scores, pairs[:, 1], pairs[:, 0]))
    pairs, scores = pairs[order], scores[order]
    first = np.ones(len(pairs), bool)
    first[1:] = (pairs[1:] != pairs[:-1]).any(1)
    return np.ascontiguousarray(pairs[first]), np.ascontiguousarray(scores[first])


def components(pairs: np.ndarray) -> list[np.ndarray]:
    """Connected components of the graph whose edges are ``pairs`` (m, 2) int64 ids -> groups (each a sorted
    int64 array of 2 or more ids), ordered by their smallest id. Union-find with path halving."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return []
    nodes, inv = np.unique(pairs, return_inverse=True)
    inv = inv.reshape(-1, 2)
    parent = np.arange(len(nodes))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in inv:
        ru, rv = find(int(u)), find(int(v))
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    roots = np.array([find(i) for i in range(len(nodes))])
    order = np.argsort(roots, kind="stable")
    cuts = np.flatnonzero(np.diff(roots[order])) + 1
    return [nodes[g] for g in np.split(order, cuts)]


def clique_groups(pairs: np.ndarray, scores: np.ndarray) -> list[np.ndarray]:
    """The stricter rule: groups in which every two members are a verified pair (complete linkage).

    pairs (m, 2) int64, scores (m,) float32 (higher = surer). Pairs are taken best first; two groups merge only when
    every cross pair is an edge. Returns groups (sorted int64 arrays of 2 or more ids) ordered by smallest id."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    edges = {(int(a), int(b)) if a < b else (int(b), int(a)) for a, b in pairs}
    group: dict[int, frozenset] = {}
    for r in np.argsort(-np.asarray(scores, np.float32), kind="stable"):
        a, b = int(pairs[r, 0]), int(pairs[r, 1])
        ga, gb = group.get(a, frozenset([a])), group.get(b, frozenset([b]))
        if ga is gb or ga == gb:
            continue
        if all((min(x, y), max(x, y)) in edges for x in ga for y in gb):
            merged = ga | gb
            for x in merged:
                group[x] = merged
    out = {g for g in group.values() if len(g) > 1}
    return sorted((np.array(sorted(g), np.int64) for g in out), key=lambda g: int(g[0]))


def pair_kind(clip: float, hash_bits: float, same_pixels: bool, t: ImageThresholds = ImageThresholds(),
              pixels: tuple | None = None) -> str:
    """The kind of a candidate image pair, or "" when it is not a duplicate.

    ``clip``: cosine of the CLIP vectors; ``hash_bits``: the aligned perceptual hash distance (bits of 64; the
    larger of pHash and dHash at their best alignment); ``same_pixels``: same bytes or same decoded pixels;
    ``pixels``: the pixel check (ncc, worst tile, overlap, offset, turn; ``dedup_pixels.PixelCheck``), None when
    not made."""
    if same_pixels:
        return "exact"
    if hash_bits <= t.near_bits and (pixels is None or pixels_agree(pixels, t)):
        return "near"
    if hash_bits <= t.similar_bits and clip >= t.similar_clip and (pixels is None or pixels_alike(pixels, t)):
        return "similar"
    return ""


def other_colours(pose: list, t: ImageThresholds) -> bool:
    """Whether a pixel check's (offset, turn, agree, hue, colour) say the coloured parts differ in hue or colour
    beyond a recolouring (``t.pixel_hue``, ``t.pixel_colour``): another drawing, not a copy (NaN, or not given:
    not checked)."""
    return (len(pose) > 3 and pose[3] > t.pixel_hue) or (len(pose) > 4 and pose[4] > t.pixel_colour)


def pixels_agree(pixels: tuple, t: ImageThresholds = ImageThresholds()) -> bool:
    """Whether a pixel check (ncc, worst tile, overlap[, offset, turn[, agree]]) says the same picture: the pixels
    agree, as a whole and tile by tile, and one frame lies inside the other or is turned about its centre (what is
    not given or NaN is not checked: older evidence); a copy lying unmoved on the other (``same_frame_*``) needs
    less agreement, as only an edit can tell the two apart."""
    ncc, worst_tile, overlap, *pose = pixels
    if other_colours(pose, t):
        return False
    if (len(pose) > 1 and overlap >= t.contained and pose[0] <= t.same_frame_offset
            and abs(pose[1]) <= t.same_frame_turn):   # unmoved on the other picture: only an edit differs
        return bool(ncc >= t.same_frame_ncc and worst_tile <= t.same_frame_tile
                    and not (len(pose) > 2 and pose[2] < t.same_frame_agree))
    if not (ncc >= t.pixel_ncc and worst_tile <= t.pixel_tile and overlap >= t.overlap):
        return False
    if len(pose) > 2 and pose[2] < t.pixel_agree:
        return False
    if not pose or np.isnan(pose[0]):
        return True
    offset, turn = pose[:2]
    if abs(turn) > t.max_turn:
        return False
    return ((overlap >= t.contained and abs(turn) <= t.contained_turn)
            or (offset <= t.centred and abs(turn) >= t.min_turn))


def pixels_alike(pixels: tuple, t: ImageThresholds = ImageThresholds()) -> bool:
    """Whether a pixel check (ncc, worst tile, overlap[, offset, turn, ...]) allows another shot of the same scene:
    the pixels correlate, the frames mostly overlap, their centres are close and they are hardly turned."""
    ncc, _, overlap, *pose = pixels
    if other_colours(pose, t):
        return False
    offset = pose[0] if pose else np.nan
    turn = pose[1] if len(pose) > 1 else np.nan
    return (ncc >= t.similar_ncc and overlap >= t.overlap and not offset > t.similar_offset
            and not abs(turn) > t.similar_turn)


def linked_groups(pairs: np.ndarray, checked: np.ndarray, min_share: float = 0.5) -> list[np.ndarray]:
    """Groups whose every member is linked to most of the others it was checked against: between components and
    cliques.

    pairs (m, 2) int64: verified pairs (the edges); checked (c, 2) int64: every pair whose verdict counts, edge or
    not (the edges are added to them). Each connected component of the edges is peeled: while some member's share
    of edges among its checked pairs inside the group is below ``min_share``, the member with the lowest share
    (then the largest id) leaves; those who left are grouped again the same way. A copy is an edge to most of its
    original's copies; another shot that aligns with a few crops but is refused by the picture and its other copies
    is not.
    Returns groups (sorted int64 arrays of 2 or more ids) ordered by their smallest id."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    checked = np.unique(np.sort(np.concatenate([np.asarray(checked, np.int64).reshape(-1, 2), pairs]), axis=1),
                        axis=0)
    out = []
    for comp in components(pairs):
        keep = _peel(comp, pairs, checked, min_share)
        if len(keep) < 2:  # cannot happen (the last edge's two ends always stay): no endless regrouping
            continue
        out.append(keep)
        left = np.setdiff1d(comp, keep)
        inside = np.isin(pairs, left).all(axis=1)
        out += linked_groups(pairs[inside], checked, min_share)
    return sorted(out, key=lambda g: int(g[0]))


def _peel(members: np.ndarray, pairs: np.ndarray, checked: np.ndarray, min_share: float) -> np.ndarray:
    """The members (sorted int64) that stay once those with a share of edges below ``min_share`` are peeled."""
    alive = np.ones(len(members), bool)
    e = np.searchsorted(members, pairs[np.isin(pairs, members).all(axis=1)])
    c = np.searchsorted(members, checked[np.isin(checked, members).all(axis=1)])
    while alive.sum() > 1:
        ea, ca = e[alive[e].all(axis=1)], c[alive[c].all(axis=1)]
        linked = np.bincount(ea.reshape(-1), minlength=len(members))
        seen = np.bincount(ca.reshape(-1), minlength=len(members))
        share = np.where(alive, linked / np.maximum(seen, 1), np.inf)
        worst = len(share) - 1 - int(np.argmin(share[::-1]))
        if share[worst] >= min_share:
            break
        alive[worst] = False
    return members[alive] if alive.sum() > 1 else members[:0]


def weakest_kind(kinds) -> str:
    """The weakest of ``kinds`` (a group is as sure as its weakest pair)."""
    kinds = [k for k in kinds if k]
    return max(kinds, key=_RANK.__getitem__) if kinds else ""


def choose_keep(sizes: np.ndarray, mtimes: np.ndarray, ids: np.ndarray, policy: str) -> int:
    """Which member of a group to keep: ``largest`` (most pixels, then bytes: pass sizes as pixels * 2**40 +
    bytes, or bytes), ``newest`` (latest mtime), ``first`` (smallest id, the first indexed). Ties go to the
    smallest id. sizes, mtimes, ids (n,) -> the position (0..n-1) of the member kept."""
    ids = np.asarray(ids, np.int64)
    if policy == "first":
        key = -ids.astype(np.float64)
    elif policy == "largest":
        key = np.nan_to_num(np.asarray(sizes, np.float64), nan=-1.0)
    elif policy == "newest":
        key = np.nan_to_num(np.asarray(mtimes, np.float64), nan=-np.inf)
    else:
        raise ValueError(f"unknown keep policy {policy!r}; choose largest, newest or first")
    best = key == key.max()
    return int(np.flatnonzero(best)[np.argmin(ids[best])])


def shingles(text: str, n: int = 3) -> frozenset:
    """The word n-grams of a text, case and spacing folded (a text shorter than n words is its one n-gram)."""
    words = "".join(c if c.isalnum() else " " for c in text.casefold()).split()
    if len(words) < n:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a & b| / |a | b| (0 for two empty sets)."""
    return len(a & b) / len(a | b) if (a or b) else 0.0


def text_kind(same_hash: bool, overlap: float, clip: float, near: float = 0.8, similar: float = 0.5,
              similar_clip: float = 0.9) -> str:
    """The kind of a candidate text pair: exact (same text), near (word 3-gram overlap >= ``near``: the same text
    edited), similar (overlap >= ``similar`` and close vectors), else ""."""
    if same_hash:
        return "exact"
    if overlap >= near:
        return "near"
    if overlap >= similar and clip >= similar_clip:
        return "similar"
    return ""

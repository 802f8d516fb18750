"""The video path of ``find_duplicates``: candidates from frame searches, verification by frame sequences in time.

Candidates: every informative frame (not within ``frame_score`` of a black, white or grey picture) of a video not
searched yet asks the ``frames`` table for its ``k`` nearest frames; two videos with a frame pair at or above
``frame_score`` are a candidate pair. Verification reads both videos' frames, matches each frame to its best in the
other video, and aligns the matches in time (``retrieval.algorithms.dedup_video.align_videos``): the same video
(near), a clip cut from the other (contained, with its time range), or a shared opening and nothing more.
"""
from __future__ import annotations

import logging
import time

import numpy as np
from PIL import Image

from retrieval.algorithms.dedup import merge_pairs
from retrieval.algorithms.dedup_video import Alignment, align_videos, blank_frames, video_kind
from retrieval.cancel import checkpoint
from retrieval.errors import InvalidInput
from retrieval.index.directory import NO_MODEL, Index
from retrieval.io.workers import Progress
from retrieval.query.dedup_state import DedupState, kind_code, save_state
from retrieval.store.base import arrow_to_vectors

log = logging.getLogger(__name__)
BLANK_COLOURS = ((0, 0, 0), (255, 255, 255), (128, 128, 128), (32, 32, 32))


def blank_vectors(ix: Index) -> np.ndarray:
    """Vectors of uniform pictures (black, white, greys) from the index's model; none for a raw-vector index."""
    if ix.model == NO_MODEL:
        return np.zeros((0, ix.dim), np.float32)
    return ix.encoder().encode_images([Image.new("RGB", (64, 64), c) for c in BLANK_COLOURS])


def _frames(ix: Index, video_ids) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """video id -> (frame ids (n,), times (n,) float64, vectors (n, d)), in time order."""
    out: dict[int, list] = {}
    vids = np.unique(np.asarray(video_ids, np.int64))
    for i in range(0, len(vids), 1024):
        where = f"video_id IN ({','.join(str(int(v)) for v in vids[i:i + 1024])})"
        for batch in ix.store.scan("frames", ["id", "video_id", "t", "vector"], where=where):
            x, valid = arrow_to_vectors(batch.column(3), ix.dim)
            cols = [batch.column(c).to_numpy(zero_copy_only=False)[valid] for c in range(3)]
            for fid, vid, t, v in zip(*cols, x):
                out.setdefault(int(vid), []).append((int(fid), float(t), v))
    result = {}
    for vid, rows in out.items():
        rows.sort(key=lambda r: r[1])
        result[vid] = (np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.float64),
                       np.stack([r[2] for r in rows]).astype(np.float32))
    return result


def video_candidates(ix: Index, state: DedupState, options, report) -> int:
    """Candidate video pairs from the frames of videos not searched yet; returns how many videos were searched."""
    if not ix.store.has_table("frames"):
        raise InvalidInput(f"{ix.path} has videos but no frames table to compare them by")
    videos = np.concatenate([b.column(0).to_numpy() for b in ix.store.scan("videos", ["id"])]).astype(np.int64)
    todo = videos[~np.isin(videos, state.done)]
    blanks = blank_vectors(ix) if len(todo) else None
    last_save = time.monotonic()
    for start in range(0, len(todo), 64):
        checkpoint()
        chunk = todo[start:start + 64]
        frames = _frames(ix, chunk)
        pairs, scores = [], []
        for vid, (_, _, x) in frames.items():
            x = x[~blank_frames(x, blanks, options.frame_score)]
            if not len(x):
                continue
            D, I = ix.search_vectors("frames", x, k=options.k)
            hit = (I >= 0) & (D >= options.frame_score)
            if not hit.any():
                continue
            other = video_of(ix, I[hit])
            keep = (other >= 0) & (other != vid)
            pairs.append(np.stack([np.minimum(other[keep], vid), np.maximum(other[keep], vid)], axis=1))
            scores.append(D[hit][keep])
        if pairs:
            state.add_pairs(*merge_pairs(np.concatenate(pairs).astype(np.int64),
                                         np.concatenate(scores).astype(np.float32)))
        state.done = np.concatenate([state.done, chunk])
        if time.monotonic() - last_save > 20.0:
            save_state(ix.path, "videos", state)
            last_save = time.monotonic()
        report(Progress("search", min(start + 64, len(todo)), len(todo), {"candidates": len(state.pairs)}))
    return int(len(todo))


def video_of(ix: Index, frame_ids: np.ndarray) -> np.ndarray:
    """The video of each frame id, any shape -> the same shape int64; -1 for a frame no longer stored (or without
    a video). One ``take`` of the distinct ids; no Python loop over the frames."""
    frame_ids = np.asarray(frame_ids, np.int64)
    uniq, inverse = np.unique(frame_ids, return_inverse=True)
    rows = ix.store.take("frames", uniq, ["id", "video_id"])
    got = np.asarray(rows.column("id").to_numpy(zero_copy_only=False), np.int64)
    vid = rows.column("video_id").fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    out = np.full(len(uniq), -1, np.int64)
    out[np.searchsorted(uniq, got)] = vid  # ``take`` returns only ids it was given
    return out[inverse.reshape(-1)].reshape(frame_ids.shape)


def verify_videos(ix: Index, state: DedupState, todo: np.ndarray, options, report) -> None:
    """Step 2 for videos: same hash -> exact; else align the frame sequences (see the module docstring)."""
    if len(todo) == 0:
        return
    ids = np.unique(state.pairs[todo].reshape(-1))
    frames = _frames(ix, ids)
    hashes = {r["id"]: r.get("hash") for r in ix.store.take("videos", ids, ["id", "hash"]).to_pylist()}
    blanks = blank_vectors(ix)
    keep = {v: ~blank_frames(x, blanks, options.frame_score) for v, (_, _, x) in frames.items()}
    for n, p in enumerate(todo):
        checkpoint()
        a, b = (int(v) for v in state.pairs[p])
        if a not in frames or b not in frames:
            continue
        (_, ta, xa), (_, tb, xb) = frames[a], frames[b]
        ta, xa, tb, xb = ta[keep[a]], xa[keep[a]], tb[keep[b]], xb[keep[b]]
        al = align_videos(ta, tb, *_matches(xa, xb, options.frame_score), tol=_step(ta, tb))
        same = bool(hashes.get(a)) and hashes.get(a) == hashes.get(b)
        state.kind[p] = kind_code(video_kind(al, same))
        state.evidence[p] = (al.offset, al.cover_a, al.cover_b, *al.range_a, *al.range_b, al.frames)
        report(Progress("verify", n + 1, len(todo)))


def _matches(xa: np.ndarray, xb: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's best frame in the other video, both ways, if at least ``min_score`` -> (pos_a (m,), pos_b (m,))."""
    if not len(xa) or not len(xb):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    S = xa @ xb.T
    ia = np.arange(len(xa))
    ib = np.arange(len(xb))
    a2b, b2a = S.argmax(1), S.argmax(0)
    pa = np.concatenate([ia[S[ia, a2b] >= min_score], b2a[S[b2a, ib] >= min_score]])
    pb = np.concatenate([a2b[S[ia, a2b] >= min_score], ib[S[b2a, ib] >= min_score]])
    return pa, pb


def _step(ta: np.ndarray, tb: np.ndarray) -> float:
    """The time tolerance of an alignment: one and a half sampling intervals (0.6 s when unknown)."""
    gaps = np.concatenate([np.diff(ta), np.diff(tb)])
    gaps = gaps[gaps > 0]
    return float(1.5 * np.median(gaps)) if len(gaps) else 0.6


def alignment_record(pair, ev: np.ndarray) -> dict:
    """The evidence of a video pair as output: offset, coverages, and for a contained clip where it lies."""
    if np.isnan(ev[0]):
        return {}
    al = Alignment(float(ev[0]), float(ev[1]), float(ev[2]), (ev[3], ev[4]), (ev[5], ev[6]), int(ev[7]))
    rec = {"offset": round(al.offset, 3), "cover_a": round(al.cover_a, 3), "cover_b": round(al.cover_b, 3),
           "frames": al.frames}
    kind = video_kind(al)
    if kind == "contained":
        # the clip's frames mapped through the offset into the longer video (t_b = t_a + offset)
        if al.cover_a >= al.cover_b:
            inner, outer, span = pair[0], pair[1], (al.range_a[0] + al.offset, al.range_a[1] + al.offset)
        else:
            inner, outer, span = pair[1], pair[0], (al.range_b[0] - al.offset, al.range_b[1] - al.offset)
        rec["contained"] = {"clip": int(inner), "in": int(outer), "start": round(float(span[0]), 3),
                            "end": round(float(span[1]), 3)}
    return rec




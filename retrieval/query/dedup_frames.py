"""The frames path of ``find_duplicates`` (``table="frames"``): the same moment in different videos, with its times.

What users get: groups of frames, each member a video (``path``) at a time ``t``, that show the same footage: a
clip re-used in another video, a re-upload, a shared segment. Frames of one video are never paired with each other
(a still shot would pair every frame with its neighbours), and blank frames (black, white, grey) are left out.

1. *Candidates*: every informative frame not searched yet asks the ``frames`` table for its ``k`` nearest frames;
   pairs from two different videos at or above ``frame_score`` are candidates.
2. *Verification* in time: one alike frame is not the same footage (two videos of the same red circle have alike
   frames). A pair (frame at ``t_a`` of A, frame at ``t_b`` of B) is *near* when the frames around it match too at
   the same offset ``t_b - t_a`` (``segment_support`` >= ``MIN_SUPPORT`` of the ``WIDTH`` frames either side), else
   it is not a duplicate, and only at the offset where the two videos agree best (``offset_agreement``: the mean
   cosine of the frames aligned by an offset): a slowly changing shot has alike frames a few seconds apart, the
   footage itself is the same only at one offset. The evidence kept: the offset, the support, both times.
"""
from __future__ import annotations

import time

import numpy as np

from retrieval.algorithms.dedup import candidate_pairs
from retrieval.algorithms.dedup_video import blank_frames
from retrieval.cancel import checkpoint
from retrieval.index.directory import Index
from retrieval.io.workers import Progress
from retrieval.query.dedup_search import HOLD_PAIRS, SAVE_SECONDS
from retrieval.query.dedup_state import DedupState, kind_code, save_state
from retrieval.query.dedup_video import _frames, _step, blank_vectors, video_of
from retrieval.store.base import arrow_to_vectors

WIDTH = 2          # frames either side of a pair looked at
MIN_SUPPORT = 2    # of which at least this many must match at the pair's offset


def segment_support(ta: np.ndarray, xa: np.ndarray, i: int, tb: np.ndarray, xb: np.ndarray, j: int,
                    min_score: float, tol: float, width: int = WIDTH, informative=None) -> int:
    """How many of frame ``i``'s neighbours in video A (up to ``width`` either side) match, at or above
    ``min_score`` cosine, the frame of video B nearest to the same time shifted by the pair's offset
    ``tb[j] - ta[i]`` (within ``tol`` seconds). ta (n_a,), tb (n_b,) sorted times; xa (n_a, d), xb (n_b, d) unit
    vectors; ``informative`` an optional pair of (n_a,), (n_b,) bool masks (blank frames do not count)."""
    offset = tb[j] - ta[i]
    ok_a, ok_b = informative if informative is not None else (np.ones(len(ta), bool), np.ones(len(tb), bool))
    support = 0
    for n in range(max(0, i - width), min(len(ta), i + width + 1)):
        if n == i or not ok_a[n]:
            continue
        want = ta[n] + offset
        m = int(np.clip(np.searchsorted(tb, want), 0, len(tb) - 1))
        if m > 0 and abs(tb[m - 1] - want) < abs(tb[m] - want):
            m -= 1
        if m != j and ok_b[m] and abs(tb[m] - want) <= tol and float(xa[n] @ xb[m]) >= min_score:
            support += 1
    return support


def offset_agreement(ta: np.ndarray, xa: np.ndarray, tb: np.ndarray, xb: np.ndarray, offsets: np.ndarray,
                     tol: float, informative=None) -> np.ndarray:
    """For each offset (m,) in seconds (``t_b = t_a + offset``): the mean cosine between each informative frame of
    A and the frame of B nearest its shifted time (within ``tol``), over the frames that have one; -1 where none.
    ta (n_a,), tb (n_b,) sorted; xa (n_a, d), xb (n_b, d) unit rows -> (m,) float64."""
    ok_a, ok_b = informative if informative is not None else (np.ones(len(ta), bool), np.ones(len(tb), bool))
    out = np.full(len(offsets), -1.0)
    for k, off in enumerate(np.asarray(offsets, np.float64)):
        want = ta + off
        m = np.clip(np.searchsorted(tb, want), 0, len(tb) - 1)
        prev = np.maximum(m - 1, 0)
        m = np.where(np.abs(tb[prev] - want) < np.abs(tb[m] - want), prev, m)
        use = ok_a & ok_b[m] & (np.abs(tb[m] - want) <= tol)
        if use.any():
            out[k] = float(np.einsum("ij,ij->i", xa[use], xb[m[use]]).mean())
    return out


def frame_candidates(ix: Index, state: DedupState, options, report) -> int:
    """Step 1 for frames not searched yet, a block at a time; returns how many frames were searched now."""
    blanks = blank_vectors(ix)
    done = np.unique(state.done)
    total = ix.store.count("frames")
    seen, searched, last_save = 0, 0, time.monotonic()
    for batch in ix.store.scan("frames", ["id", "video_id", "vector"], batch_rows=options.block_rows):
        checkpoint()
        x, valid = arrow_to_vectors(batch.column(2), ix.dim)
        ids = batch.column(0).to_numpy(zero_copy_only=False)[valid].astype(np.int64)
        seen += batch.num_rows
        todo = ~np.isin(ids, done) & ~blank_frames(x, blanks, options.frame_score)
        if todo.any():
            D, I = ix.search_vectors("frames", x[todo], k=options.k + 1)
            pairs, scores = candidate_pairs(ids[todo], D, I, options.frame_score)
            if len(pairs):
                va, vb = video_of(ix, pairs).T  # a frame no longer stored (-1) is kept, as another video's
                other = (va != vb) | (va < 0) | (vb < 0)
                pairs, scores = pairs[other], scores[other]
            searched += int(todo.sum())
        else:
            pairs, scores = np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
        state.add_block(ids, pairs, scores)   # merged once per save, as the other tables' blocks are
        if time.monotonic() - last_save > SAVE_SECONDS or state.held() > HOLD_PAIRS:
            save_state(ix.path, "frames", state)
            last_save = time.monotonic()
        report(Progress("search", seen, total, {"candidates": len(state.pairs) + state.held()}))
    state.flush()
    return searched


def verify_frames(ix: Index, state: DedupState, todo: np.ndarray, options, report) -> None:
    """Step 2 for frames: a pair is near when its neighbours match at its offset (see the module docstring)."""
    if len(todo) == 0:
        return
    videos = video_of(ix, state.pairs[todo])
    frames = _frames(ix, np.unique(videos[videos >= 0]))
    blanks = blank_vectors(ix)
    where = {int(f): (v, n) for v, (fids, _, _) in frames.items() for n, f in enumerate(fids)}
    informative = {v: ~blank_frames(x, blanks, options.frame_score) for v, (_, _, x) in frames.items()}
    by_videos: dict[tuple, list] = {}
    for p in todo:
        a, b = (int(v) for v in state.pairs[p])
        if a in where and b in where:
            by_videos.setdefault((where[a][0], where[b][0]), []).append(p)
    n = 0
    for (va, vb), rows in by_videos.items():
        checkpoint()
        (_, ta, xa), (_, tb, xb) = frames[va], frames[vb]
        tol, masks = _step(ta, tb), (informative[va], informative[vb])
        offsets = np.array([tb[where[int(state.pairs[p][1])][1]] - ta[where[int(state.pairs[p][0])][1]]
                            for p in rows])
        best = offsets[int(np.argmax(offset_agreement(ta, xa, tb, xb, offsets, tol, masks)))]
        for p in rows:
            i, j = where[int(state.pairs[p][0])][1], where[int(state.pairs[p][1])][1]
            support = segment_support(ta, xa, i, tb, xb, j, options.frame_score, tol, informative=masks)
            agree = abs(tb[j] - ta[i] - best) <= tol
            state.kind[p] = kind_code("near" if support >= MIN_SUPPORT and agree else "")
            state.evidence[p, :4] = (tb[j] - ta[i], support, ta[i], tb[j])
            n += 1
            report(Progress("verify", n, len(todo)))


def frame_record(ev: np.ndarray) -> dict:
    """The evidence of a frame pair as output: the offset between the videos, the support, both times."""
    if np.isnan(ev[0]):
        return {}
    return {"offset": round(float(ev[0]), 3), "support": int(ev[1]), "t_a": round(float(ev[2]), 3),
            "t_b": round(float(ev[3]), 3)}

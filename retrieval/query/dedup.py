"""``find_duplicates(index, DedupOptions)``: groups of near-duplicates over a whole table, streamed and resumable.

1. *Candidates*: every row not searched yet (all of them the first time, then only rows added since) asks the
   table's search structure (the ANN index when there is one) for its ``k`` nearest rows; pairs at or above
   ``min_score`` are candidates (``retrieval.query.dedup_search``: streamed in blocks, saved as it goes).
2. *Verification*: each candidate pair is checked with a second signal and named (exact, near, similar, or not a
   duplicate): images by content hash, decoded pixels and aligned perceptual hashes
   (``retrieval.algorithms.dedup_image``), then, for a close hash, their pixels aligned and compared
   (``retrieval.algorithms.dedup_pixels``: another shot, or one shape at another place, is not near); texts
   by content hash and word 3-gram overlap; videos by their frame sequences (``retrieval.query.dedup_video``).
   A pair is verified once; re-runs reuse the verdict.
3. *Groups*: ``rule="linked"`` (the default: every member is verified with most of the members it was checked
   against, so another shot matching a few crops of a picture stays out), connected components of the verified
   pairs, or ``rule="clique"`` (every two members verified).

The state lives in ``<index>/cache/dedup/`` (``retrieval.query.dedup_state``); the index's rows are never changed.
Progress goes to ``on_progress(Progress)``; nothing is printed.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from retrieval.algorithms.dedup import (
    KINDS,
    ImageThresholds,
    choose_keep,
    clique_groups,
    components,
    jaccard,
    linked_groups,
    shingles,
    text_kind,
    weakest_kind,
)
from retrieval.algorithms.dedup_bridges import checks_around, kept_links
from retrieval.algorithms.dedup_image import SIDE, hash_bank_geometry
from retrieval.algorithms.dedup_verdict import pair_verdict, refused_like_a_shot
from retrieval.cancel import checkpoint
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index, open_index
from retrieval.io.imageprep import ImageReadError, open_image
from retrieval.io.shard_members import read_row_image
from retrieval.io.workers import Progress
from retrieval.query.dedup_frames import frame_candidates, frame_record, verify_frames
from retrieval.query.dedup_hashes import hash_candidates
from retrieval.query.dedup_probe import dedup_probes
from retrieval.query.dedup_search import SAVE_SECONDS, pair_cosines, rows_of, search_new_rows
from retrieval.query.dedup_state import (
    UNVERIFIED,
    DedupState,
    clear_state,
    kind_code,
    kind_name,
    load_state,
    save_state,
)
from retrieval.query.dedup_video import alignment_record, verify_videos, video_candidates

log = logging.getLogger(__name__)
TABLES = ("images", "videos", "frames", "texts")
RULES = ("linked", "components", "clique")
KEEP = ("largest", "newest", "first")
BRIDGE_ROUNDS = 3   # rounds of checks around weakly supported pairs (a check's new pairs can need checks too)
VERIFY_BLOCK = 256   # image pairs verified at a time (their pictures decoded, then their pairs checked, in threads)
EVIDENCE_CACHE = 1024   # pictures' evidence kept between blocks (each up to 512 x 512 x 3 bytes and its codes)


@dataclass
class DedupOptions:
    """``k`` neighbours per row, candidate pairs from ``min_score`` (CLIP cosine), ``hashes``: images also get
    candidates from perceptual hashes (``dedup_hashes``), ``rule`` linked | components | clique, ``keep``
    (largest | newest | first, or None) the member of each group to keep, ``fresh`` to forget saved state,
    ``thresholds`` for images, ``frame_score`` (videos: the cosine at which two frames match)."""

    table: str = "images"
    k: int = 10
    min_score: float = 0.5
    rule: str = "linked"
    keep: str | None = None
    fresh: bool = False
    block_rows: int = 4096
    thresholds: ImageThresholds = field(default_factory=ImageThresholds)
    frame_score: float = 0.9
    hashes: bool = True

    def check(self) -> None:
        if self.table not in TABLES:
            raise InvalidInput(f"dedup works on the {', '.join(TABLES)} tables, not {self.table!r}")
        if self.rule not in RULES:
            raise InvalidInput(f"unknown rule {self.rule!r}; choose {', '.join(RULES)}")
        if self.keep is not None and self.keep not in KEEP:
            raise InvalidInput(f"unknown keep policy {self.keep!r}; choose {', '.join(KEEP)}")
        if not 1 <= self.k <= 1000:
            raise InvalidInput(f"k must be in 1..1000, not {self.k}")
        if not -1.0 <= self.min_score <= 1.0 or not -1.0 <= self.frame_score <= 1.0:
            raise InvalidInput("min_score and frame_score are cosines: between -1 and 1")

    def key(self, index: Index) -> dict:
        """What the saved state depends on: another key starts afresh."""
        return {"model": index.model, "table": self.table, "k": self.k, "min_score": round(self.min_score, 6),
                "thresholds": asdict(self.thresholds), "frame_score": round(self.frame_score, 6), "hashes": self.hashes,
                "version": 4}


@dataclass
class DedupResult:
    """``groups``: one dict per group (kind, ids, members with their columns, pairs with scores and kinds, keep);
    ``summary``: counts (rows, searched, candidates, verified, groups and members per kind, seconds)."""

    groups: list[dict]
    summary: dict

    def remove_list(self) -> list[str]:
        """Paths of the members that are not kept (empty unless ``keep`` was given): nothing is deleted."""
        return [m["path"] for g in self.groups for m in g["members"] if g.get("keep") is not None
                and m["id"] != g["keep"] and m.get("path")]


def find_duplicates(index: Index | str, options: DedupOptions | None = None,
                    on_progress: Callable[[Progress], None] | None = None) -> DedupResult:
    """Near-duplicate groups of ``options.table`` (see the module docstring)."""
    options = options or DedupOptions()
    options.check()
    own = not isinstance(index, Index)
    ix = open_index(index) if own else index
    try:
        with dedup_probes(ix, options.table):   # this thread only: a service's other searches keep the table's
            return _run(ix, options, on_progress or (lambda p: None))
    finally:
        if own:
            ix.close()


def _run(ix: Index, options: DedupOptions, report: Callable[[Progress], None]) -> DedupResult:
    start = time.monotonic()
    table = options.table
    if not ix.store.has_table(table) or ix.store.count(table) == 0:
        raise InvalidInput(f"{ix.path} has no rows in table {table!r} to deduplicate")
    if options.fresh:
        clear_state(ix.path, table)
    state = load_state(ix.path, table, options.key(ix))
    live = np.concatenate([b.column(0).to_numpy() for b in ix.store.scan(table, ["id"])]).astype(np.int64)
    state.keep_rows(live)
    if table == "videos":
        searched = video_candidates(ix, state, options, report)
        verify = verify_videos
    elif table == "frames":
        searched = frame_candidates(ix, state, options, report)
        verify = verify_frames
    else:
        searched = search_new_rows(ix, state, options.table, options.k, options.min_score, options.block_rows,
                                   live, report)
        if table == "images" and options.hashes:
            hash_candidates(ix, state, live, options.thresholds, report)
        verify = _verify_images if table == "images" else _verify_texts
    todo = np.flatnonzero(state.kind == UNVERIFIED)
    verify(ix, state, todo, options, report)
    for _ in range(BRIDGE_ROUNDS if options.rule == "linked" and table in ("images", "texts") else 0):
        strong = (state.kind > 0) & (state.kind != kind_code("similar"))   # check around weakly supported pairs
        around = checks_around(state.pairs[strong], state.pairs, state.pairs[state.kind != UNVERIFIED])
        if len(around) == 0:
            break
        state.add_pairs(around, pair_cosines(ix, table, around))
        verify(ix, state, np.flatnonzero(state.kind == UNVERIFIED), options, report)
    save_state(ix.path, table, state)
    groups = _groups(ix, state, options)
    return DedupResult(groups, _summary(live, searched, state, groups, time.monotonic() - start))


def _verify_images(ix: Index, state: DedupState, todo: np.ndarray, options: DedupOptions, report) -> None:
    """Step 2 for images: same hash -> exact; else decode both, same pixels -> exact, else aligned hash bits and,
    when they are close, the pixel check at the closest alignments. Pairs go in blocks: the pictures a block needs
    are decoded, then its pairs checked, each in the threads of a pool (decoding, resizing and the alignment
    release the GIL), and the verdicts written in order."""
    if len(todo) == 0:
        return
    rows = rows_of(ix, "images", state.pairs[todo].reshape(-1), ["path", "hash", "shard", "key"])
    cache: dict[int, tuple | None] = {}   # recent pictures' evidence: pairs come sorted, a row's pairs together
    t = options.thresholds
    last_save = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for start in range(0, len(todo), VERIFY_BLOCK):
            checkpoint()
            block = todo[start:start + VERIFY_BLOCK]
            hashes = [[rows.get(int(i), {}).get("hash") for i in pair] for pair in state.pairs[block]]
            same_file = np.array([bool(ha) and ha == hb for ha, hb in hashes], bool)
            need = [i for i in dict.fromkeys(state.pairs[block[~same_file]].reshape(-1).tolist()) if i not in cache]
            cache.update(zip(need, pool.map(lambda i: _picture_evidence(rows.get(i, {}), i), need)))
            jobs = [(cache[int(a)], cache[int(b)], float(state.clip[p]))
                    for p, (a, b) in zip(block[~same_file], state.pairs[block[~same_file]])]
            verdicts = iter(pool.map(lambda job: pair_verdict(*job, t), jobs))
            for p, same in zip(block, same_file):
                if same:
                    state.kind[p], state.evidence[p, :2] = kind_code("exact"), (0, 1)
                elif (verdict := next(verdicts)) is not None:   # None: a picture unreadable, tried again next run
                    state.kind[p], state.evidence[p, :8] = kind_code(verdict[0]), verdict[1]
            for old in list(cache)[:max(0, len(cache) - EVIDENCE_CACHE)]:   # bounded memory: the oldest go
                del cache[old]
            if time.monotonic() - last_save > SAVE_SECONDS:
                save_state(ix.path, "images", state)
                last_save = time.monotonic()
            report(Progress("verify", start + len(block), len(todo)))


def _picture_evidence(cols: dict, row: int) -> tuple | None:
    """(pixels (H, W, 3) uint8, views, bank, view geometry, bank geometry) of a row's picture (``hash_bank_geometry``;
    decoded drafted to ``SIDE``; its file, or its member of a shard), or None when it cannot be read (logged)."""
    try:
        views, bank, view_geo, bank_geo, img = hash_bank_geometry(
            open_image(read_row_image(cols), target=(SIDE, SIDE)).convert("RGB"))
        return np.asarray(img), views, bank, view_geo, bank_geo
    except (ImageReadError, KeyError, TypeError) as exc:
        log.info("dedup: cannot read row %s (%s); its pairs stay unverified", row, exc)
        return None


def _verify_texts(ix: Index, state: DedupState, todo: np.ndarray, options: DedupOptions, report) -> None:
    """Step 2 for texts: same hash or same text -> exact; else word 3-gram overlap."""
    if len(todo) == 0:
        return
    rows = rows_of(ix, options.table, state.pairs[todo].reshape(-1), ["text", "hash"])
    grams = {i: shingles(r.get("text") or "") for i, r in rows.items()}
    for n, p in enumerate(todo):
        a, b = (int(v) for v in state.pairs[p])
        ra, rb = rows.get(a, {}), rows.get(b, {})
        same = (ra.get("text") is not None and ra.get("text") == rb.get("text"))
        overlap = jaccard(grams.get(a, frozenset()), grams.get(b, frozenset()))
        state.kind[p] = kind_code(text_kind(same, overlap, float(state.clip[p])))
        state.evidence[p, :2] = (overlap, float(same))
        report(Progress("verify", n + 1, len(todo)))


MEMBER_COLUMNS = ("path", "video_id", "t", "source", "text", "width", "height", "bytes", "mtime", "duration", "hash")


def _groups(ix: Index, state: DedupState, options: DedupOptions) -> list[dict]:
    """Step 3: the verified pairs grouped by the rule, with members' columns, pairwise evidence and the keeper."""
    ok = state.kind > 0
    pairs, kinds = state.pairs[ok], state.kind[ok]
    clip, evidence = state.clip[ok], state.evidence[ok]
    strong = kinds != kind_code("similar")  # the same picture (or video): exact, near, contained
    if options.rule == "clique":
        groups = clique_groups(pairs[strong], clip[strong] + (len(KINDS) + 1 - kinds[strong]))  # strongest first
    elif options.rule == "linked":
        decided = state.kind > 0
        if options.table == "images":
            decided |= refused_like_a_shot(state.kind, state.evidence, options.thresholds)
        links = pairs[strong]
        links = links[kept_links(links, state.pairs[state.kind != UNVERIFIED])]   # two groups, not one
        groups = linked_groups(links, state.pairs[decided])
    else:
        groups = components(pairs[strong])
    n_strong = len(groups)
    # another shot of the same scene never chains groups together: similar groups are cliques of similar pairs
    # (a similar pair inside a group of the same picture says nothing more)
    where = {int(v): g for g, members in enumerate(groups) for v in members}
    weak = ~strong & np.array([where.get(int(a), -1) != where.get(int(b), -2) for a, b in pairs], bool)
    groups += clique_groups(pairs[weak], clip[weak])
    if not groups:
        return []
    rows = rows_of(ix, options.table, np.concatenate(groups), list(MEMBER_COLUMNS))
    member_of: dict[int, set] = {}
    for g, members in enumerate(groups):
        for v in members:
            member_of.setdefault(int(v), set()).add(g)
    by_group: list[list[int]] = [[] for _ in groups]
    for r, (a, b) in enumerate(pairs):
        for g in member_of.get(int(a), set()) & member_of.get(int(b), set()):
            by_group[g].append(r)
    out = []
    for g, members in enumerate(groups):
        pair_rows = [_pair_record(pairs[r], clip[r], kinds[r], evidence[r], options.table) for r in by_group[g]]
        mem = [{"id": int(i), **{k: v for k, v in rows.get(int(i), {}).items() if k != "id"}} for i in members]
        kind = weakest_kind(p["kind"] for p in pair_rows if p["kind"] != "similar") if g < n_strong else "similar"
        record = {"group": g + 1, "kind": kind, "size": len(mem),
                  "ids": [int(i) for i in members], "members": mem, "pairs": pair_rows}
        if options.keep:
            sizes = [(m.get("width") or 0) * (m.get("height") or 0) * 2.0 ** 40 + (m.get("bytes") or 0) for m in mem]
            mtimes = [m.get("mtime") if m.get("mtime") is not None else np.nan for m in mem]
            record["keep"] = int(members[choose_keep(np.array(sizes), np.array(mtimes, float), members,
                                                      options.keep)])
        out.append(record)
    return out


def _pair_record(pair, clip, code, ev, table: str) -> dict:
    rec = {"a": int(pair[0]), "b": int(pair[1]), "kind": kind_name(int(code)), "clip": round(float(clip), 4)}
    if table == "images":
        rec["hash_bits"] = None if np.isnan(ev[0]) else int(ev[0])
        if not np.isnan(ev[2]):
            rec["pixels"] = {"ncc": round(float(ev[2]), 4), "worst_tile": round(float(ev[3]), 4),
                             "overlap": round(float(ev[4]), 4)}
            if not np.isnan(ev[5]):
                rec["pixels"].update(offset=round(float(ev[5]), 4), turn=round(float(ev[6]), 2))
            if not np.isnan(ev[7]):
                rec["pixels"]["agree"] = round(float(ev[7]), 4)
    elif table == "texts":
        rec["overlap"] = None if np.isnan(ev[0]) else round(float(ev[0]), 4)
    elif table == "frames":
        rec.update(frame_record(ev))
    else:
        rec.update(alignment_record(pair, ev))
    return rec


def _summary(live: np.ndarray, searched: int, state: DedupState, groups: list[dict], seconds: float) -> dict:
    verified = state.kind != UNVERIFIED
    per_kind = {}
    for g in groups:
        per_kind.setdefault(g["kind"], {"groups": 0, "members": 0})
        per_kind[g["kind"]]["groups"] += 1
        per_kind[g["kind"]]["members"] += g["size"]
    return {"rows": int(len(live)), "searched": int(searched), "candidates": int(len(state.pairs)),
            "verified": int(verified.sum()), "unverified": int((~verified).sum()),
            "duplicate_pairs": int((state.kind > 0).sum()), "rejected_pairs": int((state.kind == 0).sum()),
            "groups": len(groups), "in_groups": int(sum(g["size"] for g in groups)), "kinds": per_kind,
            "removable": int(sum(g["size"] - 1 for g in groups)), "seconds": round(seconds, 3)}

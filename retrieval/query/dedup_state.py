"""What a dedup run keeps between runs, in the index's cache folder: ``<index>/cache/dedup/<table>.npz`` + ``.json``.

- ``done``: the ids whose neighbours were searched (a re-run searches only rows added since: incremental; a run
  killed part-way resumes from the last saved block; searched blocks are held by ``add_block`` and merged into
  ``done`` and ``pairs`` by ``flush``, which every save does first);
- ``pairs`` (m, 2) int64 with ``clip`` (m,) float32: the candidate pairs found so far;
- ``hashed``: the ids whose perceptual-hash probe codes were joined into ``pairs`` (``retrieval.query.dedup_hashes``:
  a re-run joins only rows added since);
- ``kind`` (m,) int8 (-1: not verified yet, 0: not a duplicate, 1 + position in ``KINDS``) and ``evidence``
  (m, 8) float64: what verification measured (hash bits, or a video alignment's offset, coverages and ranges).

The ``.json`` holds the run's key (model, k, thresholds...): a run with another key starts afresh. Writes are atomic
(a temporary file renamed over the old one), so a kill never leaves a half-written state. The index's rows are never
touched.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.algorithms.dedup import KINDS

log = logging.getLogger(__name__)
EVIDENCE = 8
UNVERIFIED = -1


def kind_code(kind: str) -> int:
    return 1 + KINDS.index(kind) if kind else 0


def kind_name(code: int) -> str:
    return KINDS[code - 1] if code > 0 else ""


@dataclass
class DedupState:
    """The saved progress of one table's dedup (see the module docstring)."""

    key: dict
    done: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    clip: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    kind: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    evidence: np.ndarray = field(default_factory=lambda: np.zeros((0, EVIDENCE), np.float64))
    hashed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    found: list = field(default_factory=list, repr=False)   # (ids, pairs, clip) of blocks searched since ``flush``

    def add_block(self, ids: np.ndarray, pairs: np.ndarray, clip: np.ndarray) -> None:
        """Hold one searched block: its ids (b,) and candidate pairs (m, 2) with scores (m,), merged into ``done``
        and ``pairs`` by ``flush`` (a merge sorts every pair: once per save, not once per block)."""
        self.found.append((np.asarray(ids, np.int64), np.asarray(pairs, np.int64).reshape(-1, 2),
                           np.asarray(clip, np.float32).reshape(-1)))

    def held(self) -> int:
        """Candidate pairs held by ``add_block`` and not merged yet."""
        return sum(len(p) for _, p, _ in self.found)

    def flush(self) -> int:
        """Merge the held blocks (``add_pairs``: a pair found twice since the last flush keeps its best score);
        ``done`` stays sorted, each id once. Returns the new pairs."""
        if not self.found:
            return 0
        ids, pairs, clip = (np.concatenate(c) for c in zip(*self.found))
        self.found = []
        self.done = np.union1d(self.done, ids)
        return self.add_pairs(pairs, clip)

    def add_pairs(self, pairs: np.ndarray, clip: np.ndarray) -> int:
        """Merge new candidate pairs (already known pairs keep their verification and score, a new pair found twice
        keeps its best score); returns how many are new. Vectorised (one sort of all pairs): it runs after every
        block of a large table's search."""
        new = np.asarray(pairs, np.int64).reshape(-1, 2)
        clip = np.asarray(clip, np.float32).reshape(-1)
        before = len(self.pairs)
        allp = np.concatenate([self.pairs, new])
        # known pairs first (a tag above any cosine), so that they keep their row (and its verification)
        tag = np.concatenate([np.full(before, 2.0, np.float32), clip])
        src = np.concatenate([np.arange(before), -1 - np.arange(len(new))])   # >= 0: a known row, < 0: a new one
        order = np.lexsort((-tag, allp[:, 1], allp[:, 0]))
        allp, src = allp[order], src[order]
        first = np.ones(len(allp), bool)
        first[1:] = (allp[1:] != allp[:-1]).any(1)
        merged, src = np.ascontiguousarray(allp[first]), src[first]
        if len(merged) == before:
            return 0
        n, old = len(merged), src >= 0
        kind = np.full(n, UNVERIFIED, np.int8)
        evidence = np.full((n, EVIDENCE), np.nan)
        scores = np.zeros(n, np.float32)
        kind[old], evidence[old], scores[old] = self.kind[src[old]], self.evidence[src[old]], self.clip[src[old]]
        scores[~old] = clip[-1 - src[~old]]
        self.pairs, self.clip, self.kind, self.evidence = merged, scores, kind, evidence
        return n - before

    def keep_rows(self, live: np.ndarray) -> int:
        """Forget pairs and done ids of rows no longer in the table (deleted, replaced); returns pairs dropped."""
        live = np.asarray(live, np.int64)
        self.done = self.done[np.isin(self.done, live)]
        self.hashed = self.hashed[np.isin(self.hashed, live)]
        ok = np.isin(self.pairs, live).all(1) if len(self.pairs) else np.zeros(0, bool)
        dropped = int((~ok).sum())
        self.pairs, self.clip, self.kind, self.evidence = (self.pairs[ok], self.clip[ok], self.kind[ok],
                                                           self.evidence[ok])
        return dropped


def _paths(index_path, table: str) -> tuple[Path, Path]:
    folder = Path(index_path) / "cache" / "dedup"
    return folder / f"{table}.npz", folder / f"{table}.json"


def load_state(index_path, table: str, key: dict) -> DedupState:
    """The saved state for ``table`` when it was made with ``key``, else a fresh one (a damaged file is only lost
    work: logged and started afresh)."""
    data, meta = _paths(index_path, table)
    if not data.exists() or not meta.exists():
        return DedupState(key)
    try:
        if json.loads(meta.read_text()) != key:
            log.info("dedup: options changed since the last run of %s; starting afresh", table)
            return DedupState(key)
        with np.load(data) as z:
            return DedupState(key, z["done"].astype(np.int64), z["pairs"].astype(np.int64).reshape(-1, 2),
                              z["clip"].astype(np.float32), z["kind"].astype(np.int8),
                              z["evidence"].astype(np.float64).reshape(-1, EVIDENCE),
                              z["hashed"].astype(np.int64) if "hashed" in z else np.zeros(0, np.int64))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("dedup: the saved state of %s is unreadable (%s); starting afresh", table, exc)
        return DedupState(key)


def save_state(index_path, table: str, state: DedupState) -> None:
    """Write the state atomically (temporary files renamed over the old ones), held blocks merged first."""
    state.flush()
    data, meta = _paths(index_path, table)
    data.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    tmp_data, tmp_meta = data.with_name(f".{data.name}.{tag}.tmp"), meta.with_name(f".{meta.name}.{tag}.tmp")
    with open(tmp_data, "wb") as f:
        np.savez(f, done=np.unique(state.done), pairs=state.pairs, clip=state.clip, kind=state.kind,
                 evidence=state.evidence, hashed=np.unique(state.hashed))
    tmp_meta.write_text(json.dumps(state.key, sort_keys=True))
    os.replace(tmp_data, data)
    os.replace(tmp_meta, meta)


def clear_state(index_path, table: str) -> None:
    for p in _paths(index_path, table):
        p.unlink(missing_ok=True)

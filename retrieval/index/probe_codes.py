"""Probe codes of image rows, kept beside the index: what ``clipdex dedup`` finds candidate pairs with.

Each image row can have a few perceptual-hash codes (``retrieval.algorithms.dedup_image.probe_codes``: views and
anchors, pHash and dHash). They come from two places:

- the image indexer, which decodes every file anyway: after each commit it writes the codes of the rows it just
  committed as one *shard*, ``<index>/cache/dedup/images.codes.d/<name>.npz``. A shard is written only after its
  rows are committed, under their real ids; a crash in between loses the codes, never the rows (dedup then codes
  those files itself);
- ``clipdex dedup``, which codes the files of rows without codes and keeps everything in one file,
  ``<index>/cache/dedup/images.codes.npz``, merging the shards into it (``read_shards`` and ``checked``, called
  by ``retrieval.query.dedup_hashes.stored_codes``).

Each coded row carries the first 64 bits of its content hash (``digests``). A shard's rows are checked against the
table's ``hash`` column when merged, so codes never attach to another picture that took a freed id.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
_EMPTY = np.zeros((0, 2), np.uint64)
NAMES = ("ids", "digests", "views", "view_owner", "anchors", "anchor_owner")


def _ints(n: int = 0) -> np.ndarray:
    return np.zeros(n, np.int64)


@dataclass
class ProbeCodes:
    """``ids`` (r,) int64: the rows coded (an unreadable one has no codes) and ``digests`` (r,) uint64 (0: not
    known); ``views`` (v, 2) and ``anchors`` (a, 2) uint64 with their rows ``view_owner`` (v,) and
    ``anchor_owner`` (a,) int64."""

    ids: np.ndarray = field(default_factory=_ints)
    digests: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    views: np.ndarray = field(default_factory=lambda: _EMPTY)
    view_owner: np.ndarray = field(default_factory=_ints)
    anchors: np.ndarray = field(default_factory=lambda: _EMPTY)
    anchor_owner: np.ndarray = field(default_factory=_ints)

    @classmethod
    def of_rows(cls, ids, digests, probes: list[tuple[np.ndarray, np.ndarray] | None]) -> ProbeCodes:
        """Codes of rows ``ids`` (r,) with ``digests`` (r,) uint64 and ``probes`` (r,): (views (v_i, 2), anchors
        (a_i, 2)) or None for a row that could not be coded (it is still listed: coded, without codes)."""
        ids, digests = np.asarray(ids, np.int64), np.asarray(digests, np.uint64)
        ok = [(i, p) for i, p in zip(ids.tolist(), probes) if p is not None]

        def part(k: int) -> tuple[np.ndarray, np.ndarray]:
            if not ok:
                return _EMPTY, _ints()
            return (np.concatenate([p[k] for _, p in ok]).astype(np.uint64).reshape(-1, 2),
                    np.concatenate([np.full(len(p[k]), i, np.int64) for i, p in ok]))

        return cls(ids, digests, *part(0), *part(1))

    def keep(self, live: np.ndarray) -> ProbeCodes:
        """The codes of the rows in ``live`` only."""
        r, v, a = np.isin(self.ids, live), np.isin(self.view_owner, live), np.isin(self.anchor_owner, live)
        return ProbeCodes(self.ids[r], self.digests[r], self.views[v], self.view_owner[v], self.anchors[a],
                          self.anchor_owner[a])

    def extend(self, others: list[ProbeCodes]) -> ProbeCodes:
        """These codes and ``others``' in one (each array copied once, however many blocks are merged); a row
        listed more than once keeps its last codes."""
        if not others:
            return self
        every = [self, *others]

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(c, name) for c in every])

        def parts(name: str) -> np.ndarray:
            return np.concatenate([np.full(len(getattr(c, name)), i, np.int64) for i, c in enumerate(every)])

        ids, part = cat("ids"), parts("ids")
        order = np.lexsort((part, ids))   # by id, then by part: an id's last listing is its last in the order
        last = order[np.r_[ids[order][1:] != ids[order][:-1], True]] if len(ids) else order
        won_ids, won_part = ids[last], part[last]   # sorted by id

        def winning(owner: np.ndarray, owner_part: np.ndarray) -> np.ndarray:
            if len(won_ids) == 0:
                return np.zeros(len(owner), bool)
            pos = np.minimum(np.searchsorted(won_ids, owner), len(won_ids) - 1)
            return (won_ids[pos] == owner) & (won_part[pos] == owner_part)

        v = winning(cat("view_owner"), parts("view_owner"))
        a = winning(cat("anchor_owner"), parts("anchor_owner"))
        return ProbeCodes(won_ids, cat("digests")[last], cat("views")[v], cat("view_owner")[v], cat("anchors")[a],
                          cat("anchor_owner")[a])


def digests_of(hashes: list[str | None]) -> np.ndarray:
    """Content hashes (hex, as the ``hash`` column holds them) -> (n,) uint64: their first 64 bits (0 when none)."""
    out = np.zeros(len(hashes), np.uint64)
    for i, h in enumerate(hashes):
        if h:
            try:
                out[i] = np.uint64(int(h[:16], 16))
            except ValueError:
                pass
    return out


def codes_dir(index_path) -> Path:
    return Path(index_path) / "cache" / "dedup"


def codes_path(index_path) -> Path:
    return codes_dir(index_path) / "images.codes.npz"


def shards_dir(index_path) -> Path:
    return codes_dir(index_path) / "images.codes.d"


def _read(path: Path) -> ProbeCodes:
    with np.load(path) as z:
        n = len(z["ids"])
        return ProbeCodes(z["ids"].astype(np.int64),
                          z["digests"].astype(np.uint64) if "digests" in z.files else np.zeros(n, np.uint64),
                          z["views"].astype(np.uint64).reshape(-1, 2), z["view_owner"].astype(np.int64),
                          z["anchors"].astype(np.uint64).reshape(-1, 2), z["anchor_owner"].astype(np.int64))


def _write(path: Path, codes: ProbeCodes) -> None:
    """Write ``codes`` atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **{name: getattr(codes, name) for name in NAMES})
    os.replace(tmp, path)


def load_codes(index_path) -> ProbeCodes:
    """The saved probe codes, without the shards (none when missing; an unreadable file is only lost work: logged)."""
    path = codes_path(index_path)
    if not path.exists():
        return ProbeCodes()
    try:
        return _read(path)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("dedup: the saved probe codes are unreadable (%s); coding the images again", exc)
        return ProbeCodes()


def save_codes(index_path, codes: ProbeCodes) -> None:
    _write(codes_path(index_path), codes)


def write_shard(index_path, codes: ProbeCodes) -> Path | None:
    """Write the codes of rows just committed as a new shard (named so that shards sort in the order written)."""
    if len(codes.ids) == 0:
        return None
    path = shards_dir(index_path) / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
    _write(path, codes)
    return path


def shard_paths(index_path) -> list[Path]:
    """The shards not merged yet, oldest first."""
    d = shards_dir(index_path)
    return sorted(d.glob("*.npz")) if d.is_dir() else []


def read_shards(paths: list[Path]) -> ProbeCodes:
    """The codes of ``paths`` in one (a later shard's codes of a row win); an unreadable shard is skipped (logged:
    its rows are coded from their files instead)."""
    parts = []
    for p in paths:
        try:
            parts.append(_read(p))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("dedup: skipping the unreadable probe codes %s (%s)", p.name, exc)
    return ProbeCodes().extend(parts)


def checked(codes: ProbeCodes, stored: np.ndarray, stored_digests: np.ndarray) -> ProbeCodes:
    """``codes`` of rows whose digest matches the table's: ``stored`` (s,) int64 ids with their ``stored_digests``
    (s,) uint64 (rows gone from the table, or whose id now holds another picture, are dropped)."""
    if len(codes.ids) == 0 or len(stored) == 0:
        return codes.keep(_ints())
    order = np.argsort(stored, kind="stable")
    s_ids, s_dig = np.asarray(stored, np.int64)[order], np.asarray(stored_digests, np.uint64)[order]
    pos = np.minimum(np.searchsorted(s_ids, codes.ids), len(s_ids) - 1)
    ok = (s_ids[pos] == codes.ids) & (s_dig[pos] == codes.digests)
    return codes.keep(codes.ids[ok])

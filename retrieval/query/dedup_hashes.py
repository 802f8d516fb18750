"""Step 1b of an image dedup run: candidate pairs from perceptual hashes, beside the model's nearest neighbours.

A CLIP vector moves when a picture is turned, recoloured or framed in a screenshot: the copy can fall outside the
original's ``k`` nearest rows. So every image also gets a few probe codes (``dedup_image.probe_codes``: views and
anchors, pHash and dHash), and pairs whose codes lie within ``ImageThresholds.probe_bits`` are candidates too,
found by multi-index hashing (``retrieval.algorithms.hamming``), not by comparing every pair. They are verified
like any other pair: the hashes only propose.

The codes are kept beside the index (``retrieval.index.probe_codes``), apart from the run's state (other options
start a new state, not new codes). The image indexer takes them as it decodes each file (``indexers.probe_rows``);
this step merges those, codes only the files of rows still without codes, and joins only rows added since the last
run (``DedupState.hashed``). A picture that cannot be read gets no codes (its CLIP neighbours still count).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from retrieval.algorithms.dedup import ImageThresholds
from retrieval.algorithms.dedup_image import PROBE_DECODE, probe_codes
from retrieval.algorithms.hamming import hamming_join
from retrieval.cancel import checkpoint
from retrieval.index.directory import Index
from retrieval.index.probe_codes import (
    ProbeCodes,
    checked,
    digests_of,
    load_codes,
    read_shards,
    save_codes,
    shard_paths,
)
from retrieval.io.imageprep import ImageReadError, open_image
from retrieval.io.shard_members import read_row_image
from retrieval.io.workers import Progress
from retrieval.query.dedup_search import SAVE_SECONDS, pair_cosines, rows_of
from retrieval.query.dedup_state import DedupState, save_state

log = logging.getLogger(__name__)
BLOCK = 512          # rows decoded and coded at a time
FLIP_CODES = 500_000   # anchor codes (about 60,000 images) up to which substrings are looked up with one bit flipped


def stored_codes(ix: Index, live: np.ndarray) -> ProbeCodes:
    """The saved codes of the rows ``live`` (n,) int64, with the indexer's shards merged in (each shard's rows
    checked against the table's content hashes, then the shards deleted)."""
    codes = load_codes(ix.path)
    shards = shard_paths(ix.path)
    if shards:
        fresh = read_shards(shards)
        if len(fresh.ids):   # rows gone from the table, or whose id holds another picture now, are dropped
            rows = ix.store.take("images", fresh.ids, ["id", "hash"])
            codes = codes.extend([checked(fresh, np.asarray(rows.column("id").to_numpy(), np.int64),
                                          digests_of(rows.column("hash").to_pylist()))])
        save_codes(ix.path, codes)
        for path in shards:
            path.unlink(missing_ok=True)
    return codes.keep(live)


def probe_file(row: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The probe codes (views, anchors) of an image row's picture (a dict with ``path``, and ``shard``/``key`` for a
    shard's sample: ``shard_members.read_row_image``), decoded drafted; None when it cannot be read (logged)."""
    try:
        return probe_codes(open_image(read_row_image(row), target=PROBE_DECODE))
    except (ImageReadError, OSError, TypeError, ValueError) as exc:
        log.info("dedup: cannot read %s for its probe codes (%s)", row.get("path"), exc)
        return None


def code_rows(ix: Index, ids: np.ndarray, pool: ThreadPoolExecutor) -> ProbeCodes:
    """The probe codes of the image rows ``ids`` (decoded in ``pool``'s threads: Pillow decodes without the GIL)."""
    rows = [r for r in rows_of(ix, "images", ids, ["path", "hash", "shard", "key"]).values() if r.get("path")]
    got = list(pool.map(probe_file, rows))   # a row without a file or sample stays uncoded
    listed = np.unique(np.asarray(ids, np.int64))
    coded = ProbeCodes.of_rows([r["id"] for r in rows], digests_of([r.get("hash") for r in rows]), got)
    missing = listed[~np.isin(listed, coded.ids)]   # rows without a path: listed as coded, without codes
    return coded.extend([ProbeCodes.of_rows(missing, np.zeros(len(missing), np.uint64), [None] * len(missing))])


def hash_candidates(ix: Index, state: DedupState, live: np.ndarray, t: ImageThresholds,
                    report: Callable[[Progress], None]) -> int:
    """Code the rows of ``live`` (n,) int64 not coded yet, join the rows not joined into ``state`` yet against all,
    and add the pairs found to ``state`` with their CLIP cosines. Returns how many pairs are new."""
    if "path" not in ix.store.schema("images").names:   # vectors imported without files: nothing to decode
        return 0
    codes = stored_codes(ix, live)
    need = live[~np.isin(live, codes.ids)]
    last_save, held = time.monotonic(), []   # blocks coded since the last save: merged once per save, not per block
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for s in range(0, len(need), BLOCK):
            checkpoint()
            held.append(code_rows(ix, need[s:s + BLOCK], pool))
            if time.monotonic() - last_save > SAVE_SECONDS:
                codes, held = codes.extend(held), []
                save_codes(ix.path, codes)
                last_save = time.monotonic()
            report(Progress("hash", min(s + BLOCK, len(need)), len(need)))
    if len(need):
        codes = codes.extend(held)
        save_codes(ix.path, codes)
    new = codes.ids[~np.isin(codes.ids, state.hashed)]
    if len(new) == 0:
        return 0
    pairs = _joined(codes, new, t)
    added = state.add_pairs(pairs, pair_cosines(ix, "images", pairs)) if len(pairs) else 0
    state.hashed = np.union1d(state.hashed, new)
    save_state(ix.path, "images", state)
    return added


def _joined(codes: ProbeCodes, new: np.ndarray, t: ImageThresholds) -> np.ndarray:
    """Pairs (p, 2) int64 with a view of one within the probe bits of an anchor of the other, at least one of the
    two in ``new``: new views against every anchor, then old views against new anchors. Past ``FLIP_CODES`` anchor
    codes, substrings are looked up exactly (every pair within 3 bits, most within 8: on ``benchmarks/dedup.py``'s
    codes 90% of the pairs the flipped lookups find), as the flipped lookups' work grows as the table squared."""
    vnew, anew = np.isin(codes.view_owner, new), np.isin(codes.anchor_owner, new)
    flips = int(len(codes.anchors) <= FLIP_CODES)   # the flipped lookups' work grows as the table squared
    found = [hamming_join(codes.views[vnew], codes.view_owner[vnew], codes.anchors, codes.anchor_owner,
                          t.probe_bits, t.probe_both, flips=flips).pairs]
    if (~vnew).any() and anew.any():
        found.append(hamming_join(codes.views[~vnew], codes.view_owner[~vnew], codes.anchors[anew],
                                  codes.anchor_owner[anew], t.probe_bits, t.probe_both, flips=flips).pairs)
    return np.unique(np.concatenate(found).reshape(-1, 2), axis=0)

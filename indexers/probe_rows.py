"""Probe codes taken while images are indexed, so that ``clipdex dedup`` never decodes a file a second time.

``clipdex dedup`` finds candidate pairs with a few perceptual-hash codes per image
(``retrieval.algorithms.dedup_image.probe_codes``). Coding a picture costs about as much as decoding it, and the
indexer decodes every file anyway: so its decoding workers code the picture as well (``decode_with_codes``), at the
size dedup itself would decode it to, and the codes of each commit's rows are written beside the index once those
rows are committed (``CodeShards``, ``retrieval.index.probe_codes``). Without the dedup extra (imagehash) or with
``ImageIndexOptions.probe_codes`` off, nothing changes: dedup codes the files itself.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pyarrow as pa
from PIL import Image

from retrieval.algorithms.dedup_image import PROBE_DECODE, probe_codes
from retrieval.index.probe_codes import ProbeCodes, digests_of, write_shard
from retrieval.io.imageprep import ImagePrep, content_hash, decode_bytes, prepare_decoded

log = logging.getLogger(__name__)
Codes = tuple[np.ndarray, np.ndarray]   # (views (v, 2), anchors (a, 2)) uint64


def coding_available() -> bool:
    """Whether probe codes can be taken here (the dedup extra's imagehash is installed)."""
    try:
        import imagehash  # noqa: F401
    except ImportError:
        return False
    return True


def decode_with_codes(data: bytes, prep: ImagePrep, code: bool) -> tuple[np.ndarray, str, int, int, Codes | None]:
    """Image bytes -> (the model's input (H, W, 3) uint8, content hash, width, height, probe codes or None).

    The model's input is made exactly as ``prepare_bytes`` makes it. With ``code``, the picture is coded as
    ``retrieval.query.dedup_hashes.probe_file`` would code the row: from the same decode when it was not drafted
    (or drafted to the same size), else from a second decode drafted to ``PROBE_DECODE`` (a large JPEG). A picture
    the hashes fail on gets None (dedup tries its file again). Raises ``ImageReadError`` as ``prepare_bytes``."""
    img, width, height = decode_bytes(data, prep.size)
    pixels = prepare_decoded(img, prep)
    codes = None
    if code:
        try:
            if img.size != (width, height) and tuple(prep.size) != PROBE_DECODE:   # a JPEG drafted for the model
                img = decode_bytes(data, PROBE_DECODE)[0]
            with warnings.catch_warnings():   # a huge picture's crops: its decode has logged it already
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                codes = probe_codes(img)
        except Exception as exc:  # noqa: BLE001 - the codes are an extra: never a failed file
            log.info("no probe codes for a picture (%s: %s)", type(exc).__name__, exc)
    return pixels, content_hash(data), width, height, codes


class CodeShards:
    """The probe codes of rows handed to the committer, held until those rows are committed; then written as one
    shard under the rows' ids (``after_commit``: the committer's hook for the ``images`` table)."""

    def __init__(self, index_path, table: str = "images"):
        self.index_path, self.table = index_path, table
        self.held: dict[int, tuple[str, Codes]] = {}

    def hold(self, ids: np.ndarray, hashes: list[str], codes: list[Codes | None]) -> None:
        for i, h, c in zip(np.asarray(ids).tolist(), hashes, codes):
            if c is not None:
                self.held[i] = (h, c)

    def after_commit(self, table: str, rows: pa.Table) -> None:
        if table != self.table or not self.held:
            return
        got = [(i, *self.held.pop(i)) for i in rows.column("id").to_pylist() if i in self.held]
        keep_codes(self.index_path, got)


def keep_codes(index_path, coded: list[tuple[int, str, Codes]]) -> None:
    """Write rows' probe codes, (id, content hash, codes) each, beside the index as one shard; a failure only loses
    work (dedup codes those rows itself)."""
    if not coded:
        return
    try:
        write_shard(index_path, ProbeCodes.of_rows([c[0] for c in coded], digests_of([c[1] for c in coded]),
                                                   [c[2] for c in coded]))
    except OSError as exc:
        log.warning("could not keep the probe codes of %d rows (%s)", len(coded), exc)


def chain(*hooks):
    """One after-commit hook calling each of ``hooks`` (None skipped) in turn."""
    live = [h for h in hooks if h is not None]

    def after_commit(table: str, rows: pa.Table) -> None:
        for hook in live:
            hook(table, rows)

    return after_commit

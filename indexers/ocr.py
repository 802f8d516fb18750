"""OCR at index time (``clipdex index images --ocr``): the text in each indexed picture, read offline.

The engine is RapidOCR (``pip install 'clipdex[ocr]'`` = ``rapidocr-onnxruntime``, whose wheel holds PP-OCRv4's
detection and recognition models: nothing is downloaded at run time), run on ONNX Runtime's CPU threads.

One ``ocr`` row per picture content (keyed by ``images.hash``, so a renamed or copied file is never read twice):
the lines read (``text``, one per line; "" when there is none), their mean ``confidence`` and the ``boxes``
(JSON: four corners, line and confidence per line). A run reads only the pictures whose content has no row yet,
commits in blocks (a killed run resumes), records a file it cannot read or decode as an ``errors`` row (stage
``ocr``, source table ``ocr``, skipped on later runs until the file changes or ``retry_errors``), and drops the rows
of contents no ``images`` row has any more. The full-text index (``retrieval.index.fulltext``) joins the text to
its pictures by hash.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from indexers.common import Failure, error_table, per_second, recorded_errors, scan_tuples
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index, now
from retrieval.index.fulltext import OCR_TABLE
from retrieval.io.files import stored_path
from retrieval.io.imageprep import MAX_BYTES, ImageReadError, content_hash, open_image, read_image_file, to_rgb
from retrieval.io.workers import Progress

log = logging.getLogger(__name__)


@dataclass
class OcrOptions:
    retry_errors: bool = False
    max_side: int = 960          # the detector sees the picture scaled down to this longest side (never up)
    min_confidence: float = 0.5  # lines read with less confidence are dropped
    threads: int = 0             # ONNX Runtime threads (0: its default, every core)
    commit_rows: int = 256
    max_bytes: int = MAX_BYTES


@dataclass
class OcrSummary:
    read: int = 0          # pictures read this run
    with_text: int = 0     # of which held text
    lines: int = 0
    unchanged: int = 0     # pictures read by an earlier run (same content)
    errors: int = 0
    known_errors: int = 0
    removed: int = 0       # rows of contents no picture has any more
    elapsed: float = 0.0
    images_per_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def ocr_engine(options: OcrOptions | None = None):
    """A RapidOCR engine (``InvalidInput`` with the fix when the optional extra is not installed)."""
    o = options or OcrOptions()
    try:
        from rapidocr_onnxruntime import RapidOCR  # deferred: an optional extra (onnxruntime, opencv)
    except ImportError:
        raise InvalidInput("--ocr needs the OCR extra: pip install 'clipdex[ocr]' (rapidocr-onnxruntime)") from None
    threads = {"intra_op_num_threads": o.threads, "inter_op_num_threads": 1} if o.threads else {}
    return RapidOCR(det_limit_side_len=o.max_side, det_limit_type="max", text_score=o.min_confidence, **threads)


def read_text(engine, pixels: np.ndarray) -> tuple[str, float | None, list]:
    """(H, W, 3) uint8 RGB -> (lines joined by newlines, mean confidence or None, boxes). No text: ("", None, [])."""
    found, _ = engine(np.ascontiguousarray(pixels[:, :, ::-1]), use_cls=False)  # RapidOCR wants OpenCV's BGR
    if not found:
        return "", None, []
    # a lone character read with less than 0.9 confidence is mostly a drawn shape taken for a letter (O, A)
    found = [r for r in found if sum(c.isalnum() for c in str(r[1])) >= 2 or float(r[2]) >= 0.9]
    if not found:
        return "", None, []
    found = sorted(found, key=lambda r: (round(min(p[1] for p in r[0]) / 8), min(p[0] for p in r[0])))
    boxes = [[*(round(float(c), 1) for p in box for c in p), str(line), round(float(conf), 4)]
             for box, line, conf in found]
    return "\n".join(b[8] for b in boxes), float(np.mean([b[9] for b in boxes])), boxes


def _pictures(index: Index) -> dict[str, tuple[str, int, float]]:
    """Content hash -> (path, bytes, mtime) of its newest ``images`` row."""
    out: dict[str, tuple[int, str, int, float]] = {}
    for i, path, h, size, mtime in scan_tuples(index.store, "images", ["id", "path", "hash", "bytes", "mtime"]):
        if h and (h not in out or out[h][0] < i):
            out[h] = (i, path, size, mtime)
    return {h: v[1:] for h, v in out.items()}


def ocr_images(index: Index, options: OcrOptions | None = None,
               on_progress: Callable[[Progress], None] | None = None) -> OcrSummary:
    """Read the text of every picture of ``images`` that has no ``ocr`` row yet; returns the run's summary."""
    o = options or OcrOptions()
    t0 = time.monotonic()
    s = OcrSummary()
    schema = index.ensure_table(OCR_TABLE)
    index.ensure_table("errors")
    pictures = _pictures(index) if index.store.has_table("images") else {}
    done = {h: i for i, h in scan_tuples(index.store, OCR_TABLE, ["id", "hash"], paths=())}
    gone = [i for h, i in done.items() if h not in pictures]
    if gone:
        s.removed = index.delete(OCR_TABLE, gone)
    errors = recorded_errors(index.store, OCR_TABLE)
    todo, stale = [], []
    for h, (path, size, mtime) in pictures.items():
        if h in done:
            s.unchanged += 1
            continue
        err = errors.get(path)
        if err is not None and not o.retry_errors and err[1] == mtime and err[2] == size:
            s.known_errors += 1
            continue
        if err is not None:
            stale.append(err[0])
        todo.append((h, path, size, mtime))
    if todo:
        _read_all(index, schema, todo, o, s, on_progress, t0)
    if stale:
        index.delete("errors", stale)
    s.elapsed = time.monotonic() - t0
    s.images_per_s = per_second(s.read, s.elapsed)
    return s


def _read_all(index: Index, schema: pa.Schema, todo: list, o: OcrOptions, s: OcrSummary, on_progress, t0) -> None:
    engine = ocr_engine(o)
    rows: list[dict] = []
    failures: list[Failure] = []

    def commit() -> None:
        if rows:
            cols = {f.name: [r.get(f.name) for r in rows] for f in schema if f.name != "id"}
            index.add_rows(OCR_TABLE, pa.table({"id": index.next_ids(OCR_TABLE, len(rows)), **cols}, schema=schema))
            rows.clear()
        if failures:
            index.add_rows("errors", error_table(index, OCR_TABLE, failures))
            failures.clear()

    for n, (h, path, size, mtime) in enumerate(todo, 1):
        try:
            data = read_image_file(path, o.max_bytes)
            pixels = np.asarray(to_rgb(open_image(data)))
            text, conf, boxes = read_text(engine, pixels)
        except ImageReadError as exc:
            failures.append(Failure(path, "ocr", f"{exc.stage}: {exc.reason}", size, mtime))
        except OSError as exc:
            failures.append(Failure(path, "ocr", f"unreadable: {exc}", size, mtime))
        except Exception as exc:  # an engine failure on one picture must not stop the run
            failures.append(Failure(path, "ocr", f"{type(exc).__name__}: {exc}", size, mtime))
        else:
            got = content_hash(data)
            s.read += 1
            s.with_text += bool(text)
            s.lines += len(boxes)
            rows.append({"hash": h if got == h else got, "path": stored_path(path), "text": text,
                         "confidence": conf, "boxes": json.dumps(boxes, ensure_ascii=False), "lines": len(boxes),
                         "when": now()})
        if len(rows) + len(failures) >= o.commit_rows:
            s.errors += len(failures)
            commit()
        if on_progress is not None:
            on_progress(Progress("ocr", n, len(todo), {"with_text": s.with_text, "errors": s.errors + len(failures)},
                                 time.monotonic() - t0))
    s.errors += len(failures)
    commit()

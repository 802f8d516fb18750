"""Inputs of a classification run: class names, labels, labelled splits (shots, validation) and image features.

Everything user-facing fails with ``InvalidInput`` and a one-line message. Labels always travel by class *name*:
a label is turned into a class position by looking its name up in the class list, never by folder order.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from retrieval.algorithms.augment import augmented_views
from retrieval.errors import InvalidInput
from retrieval.io.files import read_limited
from retrieval.io.imageprep import ImageReadError, read_and_prepare
from retrieval.io.sources import IMAGE_EXTENSIONS, discover, read_manifest
from retrieval.io.workers import WorkerCrash, ordered_map
from retrieval.query.search import load_query_image

log = logging.getLogger(__name__)
MAX_CLASSES_BYTES = 16 << 20   # a classes file larger than this is refused (22k ImageNet names take 0.3 MB)


def read_classes(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line (blank lines and ``#`` comments skipped); no duplicates. Only a
    regular file of at most ``MAX_CLASSES_BYTES`` is read (``/dev/zero`` or a FIFO is refused before a byte)."""
    try:
        lines = read_limited(os.fspath(path), MAX_CLASSES_BYTES).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read classes file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return check_classes([ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")], str(path))


def check_classes(classes: Sequence[str], where: str = "classes") -> list[str]:
    """Refuse an empty class list and duplicated names (after trimming)."""
    names = [str(c).strip() for c in classes]
    if not names or not all(names):
        raise InvalidInput(f"{where}: no classes given" if not names else f"{where}: empty class name")
    seen: dict[str, int] = {}
    dups = []
    for n in names:
        if n in seen and n not in dups:
            dups.append(n)
        seen[n] = seen.get(n, 0) + 1
    if dups:
        raise InvalidInput(f"{where}: duplicated classes: {', '.join(repr(d) for d in dups[:5])}")
    return names


def read_labels(path: str | os.PathLike) -> dict[str, str]:
    """``{absolute path: label}`` from a CSV/JSONL/Parquet file with ``path`` and ``label`` columns (relative paths
    are taken relative to the file)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InvalidInput(f"labels file not found: {path}")
    rows = read_manifest(p)
    if rows and "label" not in rows[0]:
        raise InvalidInput(f"labels file {path} has no 'label' column")
    out = {}
    for row in rows:
        if row.get("path") and row.get("label") is not None:
            out[str((p.parent / str(row["path"])).resolve())] = str(row["label"]).strip()
    return out


def find_images(sources: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Image paths of files, folders and manifests (sorted), and the labels a manifest's ``label`` column gives."""
    found = discover(list(sources), IMAGE_EXTENSIONS)
    missing = [it.path for it in found.items if it.bytes is None]
    if missing:
        raise InvalidInput(f"{len(missing)} listed images do not exist (first: {missing[0]})")
    return [it.path for it in found.items], {it.path: it.label for it in found.items if it.label}


@dataclass
class LabelledSplit:
    """Images with class positions (shots or a validation split); ``dropped`` counts labels that are not classes."""

    paths: list[str]
    labels: np.ndarray  # (n,) int64 positions in the class list
    missing_classes: list[str]
    dropped: int = 0


def load_labelled(source: str, classes: Sequence[str], what: str = "shots") -> LabelledSplit:
    """A folder with one sub-folder per class (named like the class) or a manifest with ``path`` and ``label``.

    Images of unknown classes are dropped with a warning; classes without any image are listed in
    ``missing_classes`` (the caller decides whether that is an error).
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise InvalidInput(f"{what} not found: {source}")
    pairs: list[tuple[str, str]] = []
    if src.is_dir():
        for sub in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                found = discover([str(sub)], IMAGE_EXTENSIONS)
            except InvalidInput:
                continue  # an empty class folder: reported as a missing class below
            pairs += [(it.path, sub.name) for it in found.items]
    else:
        paths, labels = find_images([str(src)])
        unlabelled = [p for p in paths if p not in labels]
        if unlabelled:
            raise InvalidInput(f"{what} {source}: {len(unlabelled)} rows have no label (first: {unlabelled[0]})")
        pairs = [(p, labels[p]) for p in paths]
    pos = {c: i for i, c in enumerate(classes)}
    alias = {c.replace("_", " "): i for i, c in enumerate(classes)}
    kept = [(p, pos.get(lab, alias.get(lab.replace("_", " ")))) for p, lab in pairs]
    unknown = sorted({lab for (p, lab), (_, i) in zip(pairs, kept) if i is None})
    kept = [(p, i) for p, i in kept if i is not None]
    if unknown:
        log.warning("%s: ignoring %d images of %d labels that are not classes (e.g. %r)", what,
                    len(pairs) - len(kept), len(unknown), unknown[0])
    if not kept:
        raise InvalidInput(f"{what} {source}: no images of the given classes")
    labels = np.array([i for _, i in kept], np.int64)
    missing = [c for i, c in enumerate(classes) if not np.any(labels == i)]
    return LabelledSplit([p for p, _ in kept], labels, missing, len(pairs) - len(kept))


def _decode(task):
    """Worker: (paths, prep) -> [(path, pixels | None, reason | None)]."""
    paths, prep = task
    out = []
    for path in paths:
        try:
            out.append((path, read_and_prepare(path, prep)[0], None))
        except ImageReadError as exc:
            out.append((path, None, exc.reason))
        except Exception as exc:  # a decoder bug must not stop the run
            out.append((path, None, f"{type(exc).__name__}: {exc}"))
    return out


def encode_images(encoder, paths: Sequence[str], batch_size: int = 64, workers: int = 0,
                  on_progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Decode (``workers`` processes; 0 = inline) and encode images in batches, each exactly once.

    Returns ``(feats (n, D) float32 with NaN rows for unreadable files, [(path, reason)] of those files)``.
    Only the features are kept (n · D floats), never the pixels of more than one batch plus the tasks in flight.
    """
    feats = np.full((len(paths), encoder.dim), np.nan, np.float32)
    errors: list[tuple[str, str]] = []
    row = {p: i for i, p in enumerate(paths)}
    tasks = [(list(paths[i:i + 8]), encoder.prep) for i in range(0, len(paths), 8)]
    pix, where, done = [], [], 0

    def flush():
        if pix:
            feats[where] = encoder.encode_prepared(np.stack(pix))
            pix.clear()
            where.clear()

    for res in ordered_map(_decode, tasks, workers):
        if isinstance(res, WorkerCrash):
            res = [(p, None, res.reason) for p in res.task[0]]
        for path, pixels, reason in res:
            done += 1
            if pixels is None:
                errors.append((path, reason))
                continue
            pix.append(pixels)
            where.append(row[path])
            if len(pix) >= batch_size:
                flush()
        if on_progress is not None:
            on_progress(done, len(paths))
    flush()
    return feats, errors


def encode_views(encoder, paths: Sequence[str], n_views: int = 10, seed: int = 0,
                 batch_size: int = 64) -> np.ndarray:
    """Each image under ``n_views`` augmentations (RandomResizedCrop 0.5-1 + flip, as Tip-Adapter and GDA):
    -> (n, V, D) float32 unit view features. View j of image i uses seed ``seed + i``."""
    size = int(encoder.prep.size[0])
    out = np.empty((len(paths), n_views, encoder.dim), np.float32)
    per = max(1, batch_size // n_views)
    for s in range(0, len(paths), per):
        views = []
        for i, p in enumerate(paths[s:s + per]):
            views += augmented_views(load_query_image(p), n_views, size, seed + s + i)
        out[s:s + per] = encoder.encode_images(views, batch_size).reshape(-1, n_views, encoder.dim)
    return out

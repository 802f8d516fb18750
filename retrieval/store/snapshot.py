"""What a store has committed on disk, as a value that changes with every commit: a reader holding an older
snapshot (a served index) compares it to know when to open the index again.

Only file metadata is read (a few ``stat`` calls per table), never the data, so it is cheap enough to poll.
"""
from __future__ import annotations

import os
from pathlib import Path


def stat_key(path: Path) -> tuple:
    try:
        st = os.stat(path)
    except OSError:  # gone, or not there yet: part of the state too
        return (path.name, None)
    return (path.name, st.st_ino, st.st_size, st.st_mtime_ns)


def lance_state(root: Path) -> tuple:
    """Each Lance table's version folder (a commit adds a manifest to it and rewrites the latest-version hint) and
    the FAISS indexes kept beside the tables (``_ann/``)."""
    if not root.is_dir():
        return ()
    out = []
    for table in sorted(p for p in root.iterdir() if p.suffix == ".lance"):
        versions = table / "_versions"
        out += [(table.name,), stat_key(versions), stat_key(versions / "latest_version_hint.json")]
    ann = root / "_ann"
    if ann.is_dir():
        out += [stat_key(p) for p in sorted(ann.iterdir())]
    return tuple(out)


def faiss_state(root: Path) -> tuple:
    """Each FAISS table's state file: every commit replaces it atomically (a new inode, size or time)."""
    if not root.is_dir():
        return ()
    return tuple(stat_key(p) for p in sorted(root.glob("*.state.json")))


def disk_state(backend: str, root: Path) -> tuple:
    """The committed state of the ``backend`` store kept in ``root`` (``<index>/lance`` or ``<index>/faiss``)."""
    return lance_state(root) if backend == "lance" else faiss_state(root)

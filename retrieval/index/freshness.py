"""Whether an index changed on disk since a reader opened it: the manifest plus what its store has committed.

A long-lived reader (``clipdex serve``) polls :func:`index_state` and opens the index again when the value
changes, so rows indexed, removed or re-optimized while it runs are served within one polling interval.
"""
from __future__ import annotations

from pathlib import Path

from retrieval.index.manifest import MANIFEST
from retrieval.store.snapshot import disk_state, stat_key


def index_state(path: str | Path, backend: str) -> tuple:
    """A value that changes with every commit to the index at ``path`` (rows added or deleted, a compaction, an
    ANN index built or re-tuned, the manifest rewritten); equal values mean nothing was committed in between."""
    path = Path(path)
    return (stat_key(path / MANIFEST),) + disk_state(backend, path / backend)

"""A finished video -> its ``videos`` row and its failures, as both engines of ``clipdex index videos`` make them
(the local one from frames embedded in this process, Ray's actors from frames they embedded and wrote)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from indexers.common import Failure
from retrieval.algorithms.video import mean_pool_vectors
from retrieval.io.files import stored_path
from retrieval.io.sources import Item
from retrieval.store.base import vectors_to_arrow


def video_outcome(schema: pa.Schema, dim: int, meta_cols: list[str], sampling: str, vid: int, item: Item, info,
                  n: int, vec_sum: np.ndarray | None, last_t: float,
                  error: tuple | None) -> tuple[pa.Table | None, list[Failure]]:
    """Video ``vid`` (``info``: its ``VideoInfo``) with ``n`` frames embedded, ``vec_sum`` (d,) their vectors' sum,
    ``last_t`` its last frame's time and ``error`` (stage, reason) or None -> (its row in ``schema``, None when no
    frame was embedded; its failures: the error, as a partial video's when frames were kept)."""
    if n == 0:
        stage, reason = error or ("decode", "no frames sampled")
        return None, [Failure.of(item, stage, reason)]
    failures = []
    if error is not None:
        stage, reason = error
        failures.append(Failure.of(item, stage, f"partial, kept {n} frames: {reason}"))
    pooled = mean_pool_vectors(np.asarray(vec_sum, np.float64)[None, :])  # n x the mean: the same direction
    duration = info.duration
    if duration is None:
        duration = last_t + (1.0 / info.fps if info.fps else 0.0)
    cols = {"id": [vid], "path": [stored_path(item.path)], "duration": [duration], "fps": [info.fps],
            "n_frames": [n], "width": [info.width], "height": [info.height], "bytes": [item.bytes],
            "mtime": [item.mtime], "hash": [info.hash], "sampling": [sampling], "partial": [error is not None],
            "caption": [item.caption], "vector": vectors_to_arrow(pooled[None, :], dim)}
    for c in meta_cols:
        cols[c] = [item.meta.get(c)]
    return pa.table(cols, schema=schema), failures

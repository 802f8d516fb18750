"""``clipdex index videos SRC --engine ray``: a video per task, in a pool of Ray actors (the model loaded once per
actor) that decode it (``iter_video``: streamed, sampled, prepared), embed its frames in batches and write them as
Lance fragments of ``frames``; the driver commits them, then the video's row.

    driver: the local engine's plan (``plan_videos``: unchanged and known-bad videos skipped, duplicates and orphan
            frames of an interrupted run removed), a video id and a block of frame ids per video
    actors: decode, embed, write the frames' rows as fragments as they come (a video is never held whole); hand
            back the fragments' metadata, the video's info, frame count, the sum of its frame vectors and its error
    driver: per finished video, its frames in one Append, then its ``videos`` row (``video_outcome``, the local
            engine's), its errors, and the row it replaces deleted (``finish_videos`` at the end, as locally)

A video is done only when its row is committed, after its frames: a killed driver leaves frames without a row,
which the next run deletes as orphans before reading that video again, as after a local run. A killed actor is
restarted and its video read again by Ray; the fragments its first attempt wrote are never committed. Frame ids come
from a block of ``bytes + 1`` per video (a sampled frame takes at least one byte of the file), so they never collide.
Lance tables only.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pyarrow as pa

from indexers.common import Failure, error_table
from indexers.ray_engine import RayOptions, check_ray_index, start_ray
from indexers.video_decode import import_av, iter_video
from indexers.video_rows import video_outcome
from indexers.videos import (
    FRAMES,
    VIDEOS,
    VideoIndexOptions,
    VideoIndexSummary,
    delete_videos,
    finish_videos,
    plan_videos,
)
from retrieval.encode.encoder import load_encoder
from retrieval.index.directory import Index
from retrieval.index.schemas import base_fields
from retrieval.io.files import stored_path
from retrieval.io.sources import Discovery, Item
from retrieval.io.workers import Progress
from retrieval.store.base import vectors_to_arrow
from retrieval.store.lance_fragments import write_batches


class VideoWriter:
    """Ray actor: one video at a time, decoded, embedded and its frames written as fragments of ``frames``."""

    def __init__(self, model: str, device: str | None, threads: int, lance_root: str, dim: int,
                 opts: VideoIndexOptions, fschema: pa.Schema):
        import torch  # heavy optional dependency: only the actors set its threads

        torch.set_num_threads(max(1, threads))
        self.encoder = load_encoder(model, device=device)
        self.root, self.dim, self.opts, self.fschema = lance_root, dim, opts, fschema

    def index_video(self, item: Item, vid: int, frame_base: int) -> dict:
        """-> {"path", "vid", "fragments", "n" (frames), "sum" (d,) or None, "last_t", "info", "error", "s"}."""
        t0 = time.perf_counter()
        out: dict = {"path": item.path, "vid": vid, "n": 0, "sum": None, "last_t": 0.0, "info": None, "error": None}
        out["fragments"] = write_batches(self.root, FRAMES, self.fschema, self._frames(item, vid, frame_base, out))
        out["s"] = time.perf_counter() - t0
        return out

    def _frames(self, item: Item, vid: int, frame_base: int, out: dict):
        """The video's frame rows, a batch at a time; ``out`` gathers its info, count, vector sum and error."""
        o, pending = self.opts, ([], [], [])

        def embed():
            idx, ts, px = pending
            vecs = self.encoder.encode_prepared(np.stack(px))
            n = out["n"]
            s = vecs.astype(np.float64).sum(0)
            out["sum"] = s if out["sum"] is None else out["sum"] + s
            out["n"], out["last_t"] = n + len(idx), max(out["last_t"], max(ts))
            batch = pa.table({"id": frame_base + np.arange(n, n + len(idx)), "video_id": [vid] * len(idx),
                              "path": [stored_path(item.path)] * len(idx), "frame_index": idx, "t": ts,
                              "vector": vectors_to_arrow(vecs, self.dim)}, schema=self.fschema)
            for p in pending:
                p.clear()
            return batch.to_batches()

        for msg in iter_video(item.path, o.sampling, self.encoder.prep, o.piece):
            if msg[0] == "info":
                out["info"] = msg[1]
            elif msg[0] == "frames":
                pending[0].extend(int(i) for i in msg[1])
                pending[1].extend(float(t) for t in msg[2])
                pending[2].extend(msg[3])
                if len(pending[0]) >= o.batch_size:
                    yield from embed()
            else:
                out["error"] = msg[1]
        if pending[0]:
            yield from embed()


def index_videos_ray(index: Index, found: Discovery, options: VideoIndexOptions | None = None,
                     ray_options: RayOptions | None = None,
                     on_progress: Callable[[Progress], None] | None = None) -> VideoIndexSummary:
    """``index_videos`` with a video per task in a pool of embedding actors: the same frames, videos and errors."""
    ray = check_ray_index(index)
    opts, ropts = options or VideoIndexOptions(), ray_options or RayOptions()
    import_av()  # fail early, naming the extra, when PyAV is missing
    t0 = time.monotonic()
    s = VideoIndexSummary()
    planned = plan_videos(index, found, opts, s)
    if planned.errs:
        index.add_rows("errors", error_table(index, VIDEOS, [Failure.of(it, st, r) for it, st, r in planned.errs]))
        s.errors += len(planned.errs)
    ok_paths: set[str] = set()
    failed_paths: list[str] = []
    if planned.todo:
        start_ray(ray, ropts)
        actor = ray.remote(VideoWriter).options(num_cpus=ropts.cpus_per_actor, num_gpus=ropts.gpus_per_actor or None,
                                                max_restarts=3, max_task_retries=3)
        device = "cuda" if ropts.gpus_per_actor else "cpu"
        pool = ray.util.ActorPool([actor.remote(index.model, device, int(ropts.cpus_per_actor), str(index.store.root),
                                                index.dim, opts, planned.fschema) for _ in range(ropts.actors or 1)])
        items = {it.path: it for it in planned.todo}
        vids = index.next_ids(VIDEOS, len(planned.todo))
        work = [(it, int(v), int(index.next_ids(FRAMES, int(it.bytes) + 1)[0])) for it, v in zip(planned.todo, vids)]
        base = {f.name for f in base_fields(VIDEOS, index.dim)}
        meta_cols = [f.name for f in planned.vschema if f.name not in base]
        for n, r in enumerate(pool.map_unordered(lambda a, w: a.index_video.remote(*w), work)):
            item = items[r["path"]]
            row, failures = video_outcome(planned.vschema, index.dim, meta_cols, opts.sampling.describe(), r["vid"],
                                          item, r["info"], r["n"], r["sum"], r["last_t"], r["error"])
            if r["fragments"] and row is not None:
                index.commit_fragments(FRAMES, r["fragments"])  # the frames land before the video's row
            if row is not None:
                index.add_rows(VIDEOS, row)
                if item.path in planned.replaced:
                    delete_videos(index, [planned.replaced[item.path]])
                    s.updated += 1
                else:
                    s.added += 1
                s.frames += r["n"]
                s.partial += bool(failures)
                ok_paths.add(item.path)
            else:
                failed_paths.append(item.path)
            if failures:
                index.add_rows("errors", error_table(index, VIDEOS, failures))
                s.errors += len(failures)
            if on_progress is not None:
                on_progress(Progress(VIDEOS, n + 1, len(planned.todo), {"frames": s.frames, "errors": s.errors},
                                     time.monotonic() - t0))
    finish_videos(index, found, opts, s, planned, ok_paths, failed_paths, t0)
    return s

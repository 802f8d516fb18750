"""The Ray Data engine for ``clipdex index images SHARDS --engine ray``: the same rows as the local shard indexer.

    shards --(Ray tasks: read the tar, decode and crop each image)--> samples
           --(actor pool: the model loaded once per actor, torch threads per actor, GPUs when asked)--> vectors
           --(driver: ShardRun, the local indexer's planner, error rows and committer)--> Lance commits

Decoding and embedding scale out over the Ray cluster; the driver keeps the index's bookkeeping exactly as the
local engine does (``indexers.shards.ShardRun``): a sample already stored is skipped, failures become ``errors``
rows, the rows of a shard are committed to the index's Lance tables before the shard's record in ``shards``,
so a re-run after a killed driver (or cluster) reads only the shards without a record and commits each sample
once. ``clipdex search`` and any LanceDB reader see the rows as soon as they are committed.

Order is kept (``preserve_order``) so a shard's end marker arrives after its samples. Ray is imported lazily:
it is a heavy optional dependency (the ``[ray]`` extra).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from indexers.common import Failure, refresh_search
from indexers.images import Embedded, ImageIndexOptions
from indexers.shards import SHARDS, ShardRun, ShardSummary, decode_sample
from retrieval.encode.encoder import load_encoder
from retrieval.encode.text import encode_long_texts
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index
from retrieval.io.imageprep import ImagePrep
from retrieval.io.shards import Shard, ShardDiscovery, ShardError, ShardSample, read_shard, sample_path
from retrieval.io.workers import Progress

END, BROKEN, SAMPLE = "end", "broken", "sample"
_TEXT = ("shard", "key", "kind", "caption", "meta", "dropped", "problem", "stage", "hash")  # the string columns


@dataclass
class RayOptions:
    address: str | None = None         # a running cluster ("auto", "ray://host:10001"); None: start a local Ray
    actors: int | None = None          # embedding actors (default: one per GPU asked for, else 1)
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0        # also the torch threads of each actor
    num_cpus: int | None = None        # for a local Ray only
    object_store_memory: int | None = None  # bytes, for a local Ray only


def check_ray():
    """The ``ray`` module, or ``InvalidInput`` naming the extra to install."""
    try:
        import ray  # heavy optional dependency: only --engine ray needs it
        import ray.data  # noqa: F401 - Ray Data is part of the same extra
    except ImportError:
        raise InvalidInput("--engine ray needs Ray Data: pip install 'clipdex[ray]'") from None
    return ray


def _rows(shard: Shard, prep: ImagePrep) -> Iterator[dict]:
    """One shard's rows: a row per sample (pixels, or why not), a row if the tar broke, then the end marker."""
    blank = np.zeros((*prep.size, 3), np.uint8)
    base = {"shard": shard.path, "key": "", "copy": 1, "caption": None, "meta": "{}", "dropped": "[]",
            "problem": None, "stage": "read", "hash": None, "width": 0, "height": 0, "ok": False, "pixels": blank}
    n = 0
    try:
        for s in read_shard(shard):
            row = {**base, "kind": SAMPLE, "key": s.key, "copy": s.copy, "caption": s.caption,
                   "meta": json.dumps(s.meta), "dropped": json.dumps(s.dropped), "problem": s.problem, "stage": s.stage}
            if s.problem is None:
                d = decode_sample(sample_path(shard.path, s.key, s.copy), s.image, prep)
                if isinstance(d, Failure):
                    row.update(problem=d.reason, stage=d.stage)
                else:
                    row.update(ok=True, pixels=d.pixels, hash=d.hash, width=d.width, height=d.height)
            n += 1
            yield row
    except ShardError as exc:
        yield {**base, "kind": BROKEN, "problem": exc.reason}
    yield {**base, "kind": END}


def _text(value) -> str | None:
    """A string cell as Ray hands it back: None when missing (a block whose column is all None comes back as a float
    NaN column)."""
    return None if value is None or (isinstance(value, float) and value != value) else str(value)


def _decode_shards(batch: dict, prep: dict, rows_per_batch: int = 32) -> Iterator[dict]:
    """Ray task: shards (a batch of their descriptions) -> batches of decoded sample rows."""
    p = ImagePrep(**{**prep, "size": tuple(prep["size"])})
    out: list[dict] = []
    for i in range(len(batch["path"])):
        shard = Shard(str(batch["path"][i]), int(batch["bytes"][i]), float(batch["mtime"][i]),
                      batch["parquet"][i] or None)
        for row in _rows(shard, p):
            out.append(row)
            if len(out) >= rows_per_batch:
                yield _columns(out)
                out = []
    if out:
        yield _columns(out)


def _columns(rows: list[dict]) -> dict:
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["pixels"] = np.stack(cols["pixels"])
    return {k: (v if isinstance(v, np.ndarray) else np.array(v, dtype=object)) for k, v in cols.items()}


class Embedder:
    """Ray actor: loads the index's model once, embeds the decoded images and the captions of a batch."""

    def __init__(self, model: str, device: str | None, threads: int):
        import torch  # heavy optional dependency: only the actors set its threads

        torch.set_num_threads(max(1, threads))
        self.encoder = load_encoder(model, device=device)

    def __call__(self, batch: dict) -> dict:
        n, dim = len(batch["key"]), self.encoder.dim
        ok = batch["ok"].astype(bool)
        vectors = np.zeros((n, dim), np.float32)
        if ok.any():
            vectors[ok] = self.encoder.encode_prepared(batch["pixels"][ok])
        texts = np.zeros((n, dim), np.float32)
        captions = [_text(c) for c in batch["caption"]]
        has_text = np.array([bool(ok[i] and captions[i]) for i in range(n)])
        if has_text.any():
            texts[has_text] = encode_long_texts(self.encoder, [captions[i] for i in np.flatnonzero(has_text)]).vectors
        out = {k: v for k, v in batch.items() if k != "pixels"}
        # strings (or None) again, so no block has a float column where another has strings
        out.update({k: np.array([_text(v) for v in batch[k]], dtype=object) for k in _TEXT})
        return {**out, "vector": vectors, "text_vector": texts, "has_text": has_text}


def index_shards_ray(index: Index, found: ShardDiscovery, options: ImageIndexOptions | None = None,
                     ray_options: RayOptions | None = None,
                     on_progress: Callable[[Progress], None] | None = None) -> ShardSummary:
    """The Ray engine's ``index_shards``: same rows, errors and records in the ``images``, ``errors`` and
    ``shards`` tables, with decoding in Ray tasks and embedding in an actor pool."""
    ray = check_ray()
    if index.backend != "lance":
        raise InvalidInput(f"--engine ray writes Lance tables; {index.path} uses the {index.backend} backend")
    opts, ropts = options or ImageIndexOptions(), ray_options or RayOptions()
    t0 = time.monotonic()
    summary = ShardSummary()
    run = ShardRun(index, opts, summary)
    todo = run.record_missing(run.todo(found))
    if todo:
        _start(ray, ropts)
        prep = dataclasses.asdict(run.writer.model().prep)
        _drain(run, _dataset(ray, index, todo, prep, opts, ropts), {s.path: s for s in todo}, on_progress, t0)
    if opts.optimize and (summary.added or summary.updated):
        refresh_search(index, "images")
    summary.elapsed = time.monotonic() - t0
    summary.images_per_s = (summary.added + summary.updated) / summary.elapsed if summary.elapsed > 0 else 0.0
    return summary


def _start(ray, ropts: RayOptions) -> None:
    if ray.is_initialized():
        return
    if ropts.address:
        ray.init(address=ropts.address, log_to_driver=False)
    else:
        ray.init(num_cpus=ropts.num_cpus, object_store_memory=ropts.object_store_memory, include_dashboard=False,
                 log_to_driver=False)


def _dataset(ray, index: Index, todo: list[Shard], prep: dict, opts: ImageIndexOptions, ropts: RayOptions):
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # a shard's end marker follows its samples
    items = [{"path": s.path, "bytes": s.bytes, "mtime": s.mtime, "parquet": s.parquet or ""} for s in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # decoding in tasks of their own (a CPU share unlike the actors', so Ray does not fuse them into the actors)
    ds = ds.map_batches(_decode_shards, batch_size=1, fn_kwargs={"prep": prep}, num_cpus=0.5)
    actors = ropts.actors or 1
    device = "cuda" if ropts.gpus_per_actor else "cpu"
    return ds.map_batches(Embedder, fn_constructor_kwargs={"model": index.model, "device": device,
                                                          "threads": int(ropts.cpus_per_actor)},
                          batch_size=opts.batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
                          num_gpus=ropts.gpus_per_actor or None, num_cpus=ropts.cpus_per_actor, batch_format="numpy")


def _drain(run: ShardRun, ds, shards: dict[str, Shard], on_progress, t0: float) -> None:
    """Driver: plan each sample as the local engine does, write rows and errors, record each finished shard."""
    current: str | None = None
    done = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        rows, texts = [], []
        for i in range(len(batch["key"])):
            shard = shards[str(batch["shard"][i])]
            if shard.path != current:
                current = shard.path
                run.begin(shard)
            kind = batch["kind"][i]
            if kind == BROKEN:
                run.broken(shard, str(batch["problem"][i]))
            elif kind == END:
                _emit(run, rows, texts)
                rows, texts = [], []
                run.finish(shard)
                current = None
                done += 1
                if on_progress is not None:
                    s = run.summary
                    on_progress(Progress(SHARDS, done, len(shards), {"added": s.added + s.updated, "errors": s.errors},
                                         time.monotonic() - t0))
            else:
                ok = bool(batch["ok"][i])  # else the reason is a failed download, a bad json, an undecodable image
                sample = ShardSample(str(batch["key"][i]), None, _text(batch["caption"][i]),
                                     json.loads(batch["meta"][i]), None if ok else str(batch["problem"][i]),
                                     str(batch["stage"][i]), int(batch["copy"][i]),
                                     [tuple(d) for d in json.loads(batch["dropped"][i])])
                item = run.plan(shard, sample)
                if item is None:
                    continue
                rows.append(Embedded(item, _text(batch["hash"][i]), int(batch["width"][i]), int(batch["height"][i]),
                                     batch["vector"][i]))
                texts.append(batch["text_vector"][i] if batch["has_text"][i] else None)
        _emit(run, rows, texts)


def _emit(run: ShardRun, rows: list[Embedded], texts: list) -> None:
    if not rows:
        return
    dim = run.index.dim
    mask = np.array([t is None for t in texts])
    flat = np.stack([np.zeros(dim, np.float32) if t is None else t for t in texts]).astype(np.float32).reshape(-1)
    run.emit(rows, text_vectors=pa.FixedSizeListArray.from_arrays(pa.array(flat), dim, mask=pa.array(mask)))

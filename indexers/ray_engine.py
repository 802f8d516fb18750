"""The Ray Data engine for ``clipdex index images SHARDS --engine ray``: the same rows as the local shard indexer,
written by the workers.

    driver: which shards to read (``shards`` records), which of them a killed run started, an id block per shard
    shards --(Ray tasks: read the shard's stored rows, plan each sample, decode and crop only those to do)--> samples
           --(actor pool: the model loaded once per actor; embed; write the rows as Lance fragments)--> fragments
           --(driver: one Lance Append per group of finished shards, then errors, deletes, shard records)

The driver never holds rows: it keeps the shard records and, per shard in flight, the JSON of its fragments and its
report (``indexers/ray_commit.py``); its memory grows with the number of shards, not of samples. Samples already
stored are skipped before they are decoded (``indexers/shard_ledger.py``). The bookkeeping is the local engine's
(``ShardRun``'s missing shards and records, ``ShardLedger``'s rules per sample), so both engines write the same
``images``, ``errors`` and ``shards`` rows. Killed workers are retried by Ray (a fragment written by a killed
attempt is never committed); a killed driver loses at most the group in flight, and the next run reads only the
shards without a record, skipping their samples already stored.

With the dedup extra installed (and ``probe_codes`` on), each decoding task also takes its samples' probe codes for
``clipdex dedup`` and writes them beside the index, one file per shard (``indexers.probe_rows``).

Order is kept (``preserve_order``) so a shard's end marker arrives after its fragments. Lance tables only: the
FAISS backend keeps its rows in Parquet parts with a state file, which this engine does not write (a one-line
error says so). Ray is imported lazily: it is a heavy optional dependency (the ``[ray]`` extra).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Callable

from indexers.common import refresh_search
from indexers.images import TABLE, ImageIndexOptions
from indexers.ray_commit import ShardCommits, started_shards
from indexers.ray_tasks import END, FRAG, ColumnKeeper, EmbedWriter, id_block, plan_and_decode
from indexers.shards import IDENTITY, SHARDS, ShardRun, ShardSummary, builtin_columns
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index
from retrieval.io.shards import Shard, ShardDiscovery
from retrieval.io.workers import Progress


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


def check_ray_index(index: Index):
    """``check_ray``, and ``InvalidInput`` unless ``index`` is a Lance index: the Ray engines' workers write Lance
    fragments."""
    ray = check_ray()
    if index.backend != "lance":
        raise InvalidInput(f"--engine ray writes Lance fragments; {index.path} uses the {index.backend} backend "
                           f"(index it with the local engine)")
    return ray


def index_shards_ray(index: Index, found: ShardDiscovery, options: ImageIndexOptions | None = None,
                     ray_options: RayOptions | None = None,
                     on_progress: Callable[[Progress], None] | None = None) -> ShardSummary:
    """The Ray engine's ``index_shards``: same rows, errors and records in the ``images``, ``errors`` and
    ``shards`` tables, with planning and decoding in Ray tasks and embedding and writing in an actor pool."""
    ray = check_ray_index(index)
    opts, ropts = options or ImageIndexOptions(), ray_options or RayOptions()
    t0 = time.monotonic()
    summary = ShardSummary()
    for name, extra in ((TABLE, IDENTITY), ("errors", ()), (SHARDS, ())):
        index.ensure_table(name, extra)
    started = started_shards(index.store, [s for s in found.shards if s.bytes is not None])
    run = ShardRun(index, opts, summary, state=started)
    todo = run.record_missing(run.todo(found))
    if todo:
        start_ray(ray, ropts)
        commits = ShardCommits(run, {s.path: s for s in todo}, len(todo), on_progress, t0)
        _drain(commits, _dataset(ray, index, run, todo, started, opts, ropts))
        commits.commit()
    if opts.optimize and (summary.added or summary.updated):
        refresh_search(index, TABLE)
    summary.elapsed = time.monotonic() - t0
    summary.images_per_s = (summary.added + summary.updated) / summary.elapsed if summary.elapsed > 0 else 0.0
    return summary


def start_ray(ray, ropts: RayOptions) -> None:
    """Join the cluster ``ropts`` names, or start a local Ray (nothing when Ray is running in this process)."""
    if ray.is_initialized():
        return
    if ropts.address:
        ray.init(address=ropts.address, log_to_driver=False)
    else:
        ray.init(num_cpus=ropts.num_cpus, object_store_memory=ropts.object_store_memory, include_dashboard=False,
                 log_to_driver=False)


def _dataset(ray, index: Index, run: ShardRun, todo: list[Shard], started, opts: ImageIndexOptions,
             ropts: RayOptions):
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # a shard's end marker follows its fragments
    root = str(index.store.root)
    schema = index.store.schema(TABLE)
    keeper = ray.remote(ColumnKeeper).options(num_cpus=0).remote(root, schema.names, builtin_columns(index.dim))
    items = [{"path": s.path, "bytes": s.bytes, "mtime": s.mtime, "parquet": s.parquet or "",
              "id_base": int(index.next_ids(TABLE, id_block(s.bytes))[0]),  # a block per shard: ids never collide
              "has_rows": s.path in started.with_rows, "has_errors": s.path in started.with_errors} for s in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    prep = dataclasses.asdict(run.writer.model().prep)
    # planning and decoding in tasks of their own (a CPU share unlike the actors', so Ray does not fuse them)
    ds = ds.map_batches(plan_and_decode, batch_size=1, num_cpus=0.5,
                        fn_kwargs={"prep": prep, "lance_root": root, "retry_errors": opts.retry_errors,
                                   "keeper": keeper, "codes_to": str(index.path) if run.codes is not None else ""})
    device = "cuda" if ropts.gpus_per_actor else "cpu"
    return ds.map_batches(EmbedWriter, fn_constructor_kwargs={"model": index.model, "device": device,
                                                             "threads": int(ropts.cpus_per_actor),
                                                             "lance_root": root, "dim": index.dim},
                          batch_size=opts.batch_size, compute=ray.data.ActorPoolStrategy(size=ropts.actors or 1),
                          num_gpus=ropts.gpus_per_actor or None, num_cpus=ropts.cpus_per_actor, batch_format="numpy")


def _drain(commits: ShardCommits, ds) -> None:
    """Driver: fragments and shard reports as they come, committed in groups of finished shards."""
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        for kind, shard, info in zip(batch["kind"], batch["shard"], batch["info"]):
            if kind == FRAG:
                commits.fragments(str(shard), json.loads(info))
            elif kind == END:
                commits.end(str(shard), json.loads(info))

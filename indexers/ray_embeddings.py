"""``clipdex index embeddings SRC --engine ray``: one Ray task per source file (an ``.npy`` of clip-retrieval's
``img_emb/`` with its ``text_emb/`` and ``metadata/`` rows, or a Parquet file) writes its rows as Lance fragments;
the driver commits them and keeps the local engine's progress records.

    driver: the table and its columns (``prepare_table``), which files are done or half done (``FileProgress``:
            the manifest's rows per file, what a killed run left past a checkpoint deleted), an id block per file
    tasks:  read the file from its first row not done, in blocks; the local engine's rows (``block_rows``: bad
            vectors refused, the others normalised) streamed into fragments; the refused rows handed back
    driver: per group of finished files, one Append of their fragments, one commit of their error rows, then each
            file's record (all its rows done)

The rows are the local engine's (same columns, values and errors; ids from the file's block, one per row, so they
never collide). Every file to read is recorded at its first row before any task starts, and at its end only after
its rows and errors are committed: a killed driver loses the files in flight, and the next run starts them again
where the records say, deleting first what the killed run committed of them (rows and error rows). A killed task
is retried by Ray; the fragments its first attempt wrote are never committed. The driver holds no rows: per file in
flight, its fragments' JSON and its error rows (a few per file of refused vectors). Lance tables only.
"""
from __future__ import annotations

import time
from typing import Callable

import pyarrow as pa

from indexers.common import Failure, error_table, finish_run
from indexers.embedding_rows import TABLE, block_rows, from_row
from indexers.embedding_sources import Part, blocks
from indexers.embeddings import EmbeddingSummary, FileProgress, count_block, prepare_table
from indexers.ray_engine import RayOptions, check_ray_index, start_ray
from retrieval.index.directory import Index
from retrieval.io.workers import Progress
from retrieval.store.lance_fragments import write_batches


def write_part(part: Part, start: int, id_base: int, schema: pa.Schema, root: str, dim: int,
               batch_rows: int) -> dict:
    """Ray task: rows ``start`` on of ``part`` written as uncommitted fragments of ``images`` (row r's id is
    ``id_base + r - start``) -> {"fragments": JSON strings, "rows": rows written, "failures": refused rows, "s"}."""
    t0 = time.perf_counter()
    failures: list[Failure] = []
    written = [0]

    def rows():
        for block in blocks(part, batch_rows):
            block = from_row(block, start)
            if block is None:
                continue
            s, x, why, tx, meta = block
            table, refused = block_rows(schema, dim, part, s, x, why, tx, meta, lambda kept: id_base + kept - start)
            failures.extend(refused)
            if table is not None:
                written[0] += len(table)
                yield from table.to_batches()

    frags = write_batches(root, TABLE, schema, rows())
    return {"fragments": frags, "rows": written[0], "failures": [tuple(f) for f in failures],
            "s": time.perf_counter() - t0}


def index_embeddings_ray(index: Index, parts: list[Part], ray_options: RayOptions | None = None,
                         batch_rows: int = 65536, on_progress: Callable[[Progress], None] | None = None,
                         model: str | None = None, max_in_flight: int | None = None) -> EmbeddingSummary:
    """``index_embeddings`` with a Ray task per file not done (at most ``max_in_flight`` at once; default two per
    CPU of the cluster): the same rows, errors and progress records."""
    ray = check_ray_index(index)
    t0 = time.monotonic()
    summary = EmbeddingSummary()
    schema = prepare_table(index, parts, model)
    progress = FileProgress(index)
    total = sum(p.rows for p in parts)
    todo, rows_done = progress.todo(parts, summary)
    if todo:
        progress.begin(todo)  # a killed run's committed, unrecorded files are resumed, not taken for done
        start_ray(ray, ray_options or RayOptions())
        limit = max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(num_cpus=1, max_retries=3)(write_part)
        root, waiting, flight = str(index.store.root), list(reversed(todo)), {}
        while waiting or flight:
            while waiting and len(flight) < limit:
                p, start = waiting.pop()
                base = int(index.next_ids(TABLE, p.rows - start)[0])  # a block per file: ids never collide
                flight[task.remote(p, start, base, schema, root, index.dim, batch_rows)] = p
            ray.wait(list(flight), num_returns=1)  # one finished file, then every other finished by now
            ready, _ = ray.wait(list(flight), num_returns=len(flight), timeout=0)
            rows_done += _commit(index, [(flight.pop(r), ray.get(r)) for r in ready], progress, summary)
            if on_progress is not None:
                counts = {"added": summary.added, "errors": summary.errors}
                on_progress(Progress("vectors", rows_done, total, counts, time.monotonic() - t0))
    summary.elapsed = finish_run(index, (TABLE,), summary.added > 0, True, t0)
    return summary


def _commit(index: Index, done: list[tuple[Part, dict]], progress: FileProgress, summary: EmbeddingSummary) -> int:
    """Finished files: their fragments in one Append, their refused rows in one commit, then each file's record;
    returns their rows."""
    frags = [f for _, r in done for f in r["fragments"]]
    if frags:
        index.commit_fragments(TABLE, frags)
    failures = [Failure(*f) for _, r in done for f in r["failures"]]
    if failures:
        index.add_rows("errors", error_table(index, TABLE, failures))
    for p, r in done:
        count_block(summary, r["rows"], [Failure(*f) for f in r["failures"]])
        progress.record(p, p.rows)
    return sum(p.rows for p, _ in done)


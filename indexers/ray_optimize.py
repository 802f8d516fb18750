"""``clipdex optimize IX --engine ray``: the local optimize (``retrieval.index.optimize.optimize_table``: the
structure chosen by measurement on a sample, trained once, tuned, checked against exact search, recorded), with the
full-size index filled by Ray tasks instead of one process:

    driver: choose and train on the sample (as locally) -> the trained empty index, serialised once into Ray's store
    tasks:  a copy each; add its partition of the table's rows (a range of one Lance fragment's live rows)
    driver: merge the copies in partition order (``retrieval.ann.merge``: faiss's ``merge_from`` on the lists)

so the index is the one the local build makes: the same structure, training and rows (a search returns the same
results). The structure refined from disk (``ivf_pq_disk``) is filled the same way, its rows labelled by their ids'
ranks; its float16 vectors file is then written by the driver in list order (a second pass over the table).
Structures that cannot be merged (an HNSW graph) and Lance's own indexes are built by the local path, and the report
says so. Lance
tables only: the tasks read the table's fragments (``retrieval.store.lance_fragments``).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from indexers.ray_engine import RayOptions, check_ray, start_ray
from retrieval.ann.assign import fast_assignment
from retrieval.ann.merge import from_bytes, merge_into, merge_lists, to_bytes, unmergeable
from retrieval.ann.plan import IndexPlan
from retrieval.ann.selection import Candidate
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index
from retrieval.index.optimize import OptimizeOptions, optimize_table
from retrieval.store.base import arrow_to_vectors
from retrieval.store.lance_fragments import fragment_counts, read_fragment

log = logging.getLogger(__name__)
MIN_ROWS_PER_TASK = 4096  # below this a task costs more to start than to run


@dataclass
class ParallelBuild:
    """What ``--engine ray`` did for the full-size build: ``tasks`` partitions filled (0: built in this process,
    ``note`` says why), their ``rows``, the seconds the tasks spent adding (summed: ``encode_s``), the driver's
    wall time from the first task to the merged index (``wall_s``) and its merging alone (``merge_s``)."""

    tasks: int = 0
    rows: int = 0
    encode_s: float = 0.0
    merge_s: float = 0.0
    wall_s: float = 0.0
    note: str | None = None

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def partitions(counts: list[tuple[int, int]], tasks: int, min_rows: int = MIN_ROWS_PER_TASK) -> list[tuple]:
    """Fragments' live row counts [(fragment, n)] -> about ``tasks`` ranges [(fragment, offset, limit)] of at most
    ``ceil(total / tasks)`` rows (at least ``min_rows``), none crossing a fragment, in the fragments' order; their
    rows cover every counted row once."""
    total = sum(n for _, n in counts)
    size = max(math.ceil(total / max(1, tasks)), min_rows, 1)
    out = []
    for frag, n in counts:
        for start in range(0, n, size):
            out.append((frag, start, min(size, n - start)))
    return out


def add_partition(index_bytes: np.ndarray, root: str, table: str, dim: int, part: tuple,
                  ranks: np.ndarray | None = None) -> tuple:
    """Ray task: a copy of the trained empty index holding the live rows of one fragment range ``part`` =
    (fragment, offset, limit), labelled by their ids (or by their ids' ranks in ``ranks``, sorted: the structure
    refined from disk) -> (the copy serialised, rows added, seconds spent reading and adding)."""
    t0 = time.perf_counter()
    index = from_bytes(index_bytes)
    frag, offset, limit = part
    rows = read_fragment(root, table, frag, ["id", "vector"], offset, limit)
    x, valid = arrow_to_vectors(rows.column(1), dim)
    ids = rows.column(0).to_numpy().astype(np.int64)[valid]
    if len(ids):
        with fast_assignment(index):  # the shortlist for the adds only: the copy goes back with its exact quantizer
            index.add_with_ids(np.ascontiguousarray(x, np.float32),
                               ids if ranks is None else np.searchsorted(ranks, ids))
    return to_bytes(index), int(len(ids)), time.perf_counter() - t0


class RayFill:
    """``retrieval.ann.structures.Fill`` for a Lance table: partitions added by Ray tasks, merged here."""

    def __init__(self, index: Index, table: str, ray_options: RayOptions, tasks: int | None = None):
        self.root, self.table, self.dim = str(index.store.root), table, index.dim
        self.ray_options, self.tasks = ray_options, tasks
        self.report = ParallelBuild()

    def __call__(self, empty, ranks: np.ndarray | None = None):
        why = unmergeable(empty)
        if why is not None:
            self.report.note = f"built in this process: {why}"
            log.warning("%s: %s", self.table, self.report.note)
            return None
        ray = check_ray()
        start_ray(ray, self.ray_options)
        t0 = time.perf_counter()
        tasks = self.tasks or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        parts = partitions(fragment_counts(self.root, self.table), tasks)
        data, ranked = ray.put(to_bytes(empty)), None if ranks is None else ray.put(ranks)
        task = ray.remote(num_cpus=1, max_retries=3)(add_partition)
        refs = [task.remote(data, self.root, self.table, self.dim, p, ranked) for p in parts]
        merge = merge_into if ranks is None else merge_lists
        merged, r = None, self.report
        for ref in refs:  # in partition order: the merged lists hold the rows in the table's order
            blob, n, spent = ray.get(ref)
            part = from_bytes(blob)
            del blob
            t1 = time.perf_counter()
            if merged is None:
                merged = part
            else:
                merge(merged, part)
            r.merge_s += time.perf_counter() - t1
            r.rows, r.encode_s = r.rows + n, r.encode_s + spent
        r.tasks, r.wall_s = len(parts), time.perf_counter() - t0
        log.info("%s: %d Ray tasks added %d rows (%.1f s of tasks), merged in %.1f s", self.table, r.tasks, r.rows,
                 r.encode_s, r.merge_s)
        return merged if merged is not None else empty


def optimize_table_ray(index: Index, table: str, options: OptimizeOptions | None = None,
                       ray_options: RayOptions | None = None, *, tasks: int | None = None,
                       on_plan: Callable[[IndexPlan], None] | None = None,
                       on_candidate: Callable[[Candidate], None] | None = None) -> tuple[dict, ParallelBuild]:
    """``optimize_table`` with the full-size FAISS structure filled by Ray tasks (about ``tasks`` partitions;
    default two per CPU of the cluster); returns the ANN record and what the parallel build did (its ``note`` says
    why nothing was built in parallel: a structure that cannot be merged, Lance's own index, exact search)."""
    if index.backend != "lance":
        raise InvalidInput(f"--engine ray reads the table's Lance fragments; {index.path} uses the {index.backend} "
                           f"backend (optimize it with the local engine)")
    check_ray()  # a missing extra fails before anything is built
    fill = RayFill(index, table, ray_options or RayOptions(), tasks)
    record = optimize_table(index, table, options or OptimizeOptions(), on_plan=on_plan, on_candidate=on_candidate,
                            fill=fill)
    if not fill.report.tasks and fill.report.note is None:
        fill.report.note = (f"built in this process: {record.get('factory') or record['kind']} is not a FAISS "
                            f"structure built here (nothing to merge)")
    return record, fill.report

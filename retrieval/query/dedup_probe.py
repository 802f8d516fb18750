"""The search settings of a dedup run: a self-join asks the ANN index for every row's nearest rows, and its
near-duplicates lie in the row's own inverted lists, so it needs far fewer lists probed than the text queries the
index was tuned for (``nprobe`` 256 of 512 lists at 100,000 realistic rows: half the table scanned per row, hours at
1,000,000 rows), and fewer coarse candidates re-ranked on full vectors (``k_factor`` 64 held 12 GB for a block of
4,096 rows at 100,000 rows: the run was killed for memory). ``dedup_probes(index, table)`` lowers both for the run,
in the thread that runs it, and drops them after.

Measured at 300,000 realistic rows (1,024 lists), copies of 3,000 rows at cosine 0.95 searched for their row: 8
lists find 99.9%, 16 all (at 1,000,000 rows, 2,048 lists, 2,000 copies: 16 lists 99.9%, 32 all); re-ranking 1 or 2
candidates per result finds as many as 8 (a near-duplicate is at the top of the coarse ranking), and re-ranking 8
took over half of a search's time. The lists probed stop growing at ``MAX_PROBES``: the table's lists grow as its square
root, so a row's search then grows as the square root too, not as the table.

The lowered settings hold for the calling thread only (``Store.set_search_params(persist=False)``): a served index
is shared with other searches, which keep the table's tuned settings while a dedup runs beside them.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

log = logging.getLogger(__name__)
PROBE_KEYS = ("nprobe", "nprobes")   # the FAISS sidecar's and Lance's names for the lists searched
REFINE_KEYS = ("k_factor", "refine_factor")   # candidates re-ranked on full vectors, per result
LISTS_PER_PROBE = 64                  # probe nlist / 64 lists
MIN_PROBES = 8
MAX_PROBES = 32
REFINE = 2                            # a near-duplicate is at the top of the coarse ranking: re-rank 2 x k, not 64


def dedup_nprobe(nlist: int, tuned: int) -> int:
    """The lists a dedup self-join probes: nlist / ``LISTS_PER_PROBE``, between ``MIN_PROBES`` and ``MAX_PROBES``,
    at most ``tuned`` (ints -> int)."""
    return int(min(tuned, MAX_PROBES, max(MIN_PROBES, nlist // LISTS_PER_PROBE)))


@contextmanager
def dedup_probes(index, table: str):
    """Search ``table`` with ``dedup_nprobe`` lists and at most ``REFINE`` re-ranked candidates per result while the
    block runs, in the calling thread only (a service's other searches on the same index keep the table's settings;
    a table without an inverted file is searched as it is)."""
    info = index.store.ann_info(table) if index.store.has_table(table) else {}
    params = dict(info.get("params") or {})
    nlist = (info.get("build") or {}).get("nlist") or (info.get("build") or {}).get("num_partitions")
    key = next((k for k in PROBE_KEYS if k in params), None)
    if key is None or not nlist:
        yield
        return
    probes = dedup_nprobe(int(nlist), int(params[key]))
    lower = {key: probes, **{r: min(int(params[r]), REFINE) for r in REFINE_KEYS if params.get(r)}}
    log.info("dedup: searching %s with %s of %d lists (tuned: %s)", table, lower, nlist, params)
    index.store.set_search_params(table, {**params, **lower}, persist=False)
    try:
        yield
    finally:
        index.store.set_search_params(table, None, persist=False)   # this thread searches as the table does again

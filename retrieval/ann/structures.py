"""FAISS index construction and search parameters for the FAISS store (and the benchmarks).

An ANN record (``<table>.state.json["ann"]``, copied to the manifest) says what was built::

    {"kind": "ivf_pq_fs", "factory": "IVF2048,PQ64x4fs,RFlat", "build": {...}, "params": {"nprobe": 16,
     "k_factor": 8}, "built_rows": 1000000, ...tuning results}

GPU faiss is used for k-means training when ``faiss.get_num_gpus() > 0`` (CPU otherwise); searches of flat and
IVF-flat/SQ8 indexes move to the GPU too. Every GPU step falls back to the CPU on failure.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Callable, Iterable, Iterator

import numpy as np

from retrieval.ann.assign import fast_assignment

log = logging.getLogger(__name__)
Fill = Callable[..., object]  # (a trained empty index[, ranks]) -> it holding every row, or None (build_index)
_FILL: contextvars.ContextVar[Fill | None] = contextvars.ContextVar("clipdex_ann_fill", default=None)


@contextlib.contextmanager
def filled_by(fill: Fill) -> Iterator[None]:
    """Within the block, the full-size builds of this context (``build_index``) let ``fill`` add the rows: how
    ``clipdex optimize --engine ray`` reaches the store's build without every layer between passing it on. Set only
    around the full-size build (the candidates measured on a sample are filled here, from their blocks)."""
    token = _FILL.set(fill)
    try:
        yield
    finally:
        _FILL.reset(token)


def num_gpus() -> int:
    try:
        import faiss  # heavy optional dependency, loaded on first use

        return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except Exception:  # a faiss build without GPU support
        return 0


def factory_of(record: dict, dim: int) -> str:
    """The index_factory string of an ANN record (older records carried only HNSW's M)."""
    if record.get("factory"):
        return record["factory"]
    if record.get("kind") == "hnsw":
        return f"HNSW{int(record.get('params', {}).get('M', 32))},Flat"
    return "Flat"


def new_index(factory: str, dim: int, build: dict | None = None):
    """An empty (untrained) inner-product index from a factory string, with HNSW's efConstruction set."""
    import faiss  # heavy optional dependency, loaded on first use

    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    build = build or {}
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexHNSW) and "efConstruction" in build:
        inner.hnsw.efConstruction = int(build["efConstruction"])
    return index


def train(index, x: np.ndarray) -> None:
    """Train ``index`` on x (m, d); IVF k-means runs on the GPUs when there are any."""
    import faiss  # heavy optional dependency, loaded on first use

    if index.is_trained:
        return
    ivf = None
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        pass
    if ivf is not None and num_gpus() > 0:
        try:
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(ivf.d))
            log.info("training the coarse quantizer on %d GPU(s)", num_gpus())
        except Exception as exc:  # noqa: BLE001 - a GPU problem must not stop the build
            log.warning("GPU training unavailable (%s); training on the CPU", exc)
            ivf.clustering_index = None
    index.train(np.ascontiguousarray(x, dtype=np.float32))
    if ivf is not None:
        ivf.clustering_index = None


def fill_by_rank(index, ranks_of: np.ndarray, blocks: Iterable[tuple[np.ndarray, np.ndarray]]):
    """``index`` (a trained, empty IVF without an id map) holding every row of the (ids, x) ``blocks``, each
    labelled by the rank of its id in ``ranks_of`` (sorted ids): filled by the fill :func:`filled_by` set
    (``fill(index, ranks_of)``) when it takes it, else here."""
    fill = _FILL.get()
    filled = fill(index, ranks_of) if fill is not None else None
    if filled is not None:
        return filled
    with fast_assignment(index):
        for ids, x in blocks:
            index.add_with_ids(np.ascontiguousarray(x, np.float32), np.searchsorted(ranks_of, ids))
    return index


def build_index(factory: str, dim: int, sample: np.ndarray, blocks: Iterable[tuple[np.ndarray, np.ndarray]],
                build: dict | None = None, fill: Fill | None = None):
    """IndexIDMap2 over a trained index holding every (ids, x) block: the ids are the row ids. ``fill`` (else the
    one :func:`filled_by` set), when given, receives the trained empty IndexIDMap2 and returns it filled elsewhere
    (Ray workers adding partitions of the table to copies, merged: ``retrieval.ann.merge``), or None to have
    ``blocks`` added here."""
    import faiss  # heavy optional dependency, loaded on first use

    index = new_index(factory, dim, build)
    if not index.is_trained:
        train(index, sample)
    idmap = faiss.IndexIDMap2(index)
    fill = fill or _FILL.get()
    filled = fill(idmap) if fill is not None else None
    if filled is not None:
        return filled
    with fast_assignment(idmap):
        for ids, x in blocks:
            idmap.add_with_ids(np.ascontiguousarray(x, dtype=np.float32), np.asarray(ids, np.int64))
    return idmap


class SearchParams:
    """faiss SearchParameters for an index kind and its tuned values (keeps nested objects alive)."""

    def __init__(self, kind: str, params: dict):
        import faiss  # heavy optional dependency, loaded on first use

        self.kind = kind
        self._keep = []
        p = None
        if kind == "hnsw":
            p = faiss.SearchParametersHNSW()
            p.efSearch = int(params.get("efSearch", 64))
        elif kind.startswith("ivf"):
            ivf = faiss.SearchParametersIVF()
            ivf.nprobe = int(params.get("nprobe", 16))
            p = ivf
            if "k_factor" in params:
                r = faiss.IndexRefineSearchParameters()
                r.k_factor = float(params["k_factor"])
                r.base_index_params = ivf
                self._keep.append(ivf)
                p = r
        self.value = p


def search(index, xq: np.ndarray, k: int, params: SearchParams | None):
    if params is None or params.value is None:
        return index.search(xq, k)
    return index.search(xq, k, params=params.value)


def to_gpu_for_search(index, kind: str):
    """A GPU copy of a flat / IVF-flat / IVF-SQ8 index when GPUs exist, else ``index`` itself."""
    if num_gpus() == 0 or kind not in ("flat", "ivf_flat", "ivf_sq8"):
        return index
    import faiss  # heavy optional dependency, loaded on first use

    try:
        return faiss.index_cpu_to_all_gpus(index)
    except Exception as exc:  # noqa: BLE001
        log.warning("searching on the CPU: GPU copy failed (%s)", exc)
        return index

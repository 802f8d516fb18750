"""Which vector index a Lance table gets: pure functions of numbers and records (no table is read here).

``check_kind`` names what a user may ask for: "auto", "flat", one of Lance's index types (``KINDS``) or a FAISS
structure beside the table (``lance_ann.FAISS_KINDS``). ``wanted_index`` turns an ``AnnConfig`` into what to build
for a table of ``n`` rows: the kind, its build parameters and the search parameters it starts with.
``tuning_grid`` is the search parameters tuning may walk for the index a table has (its ``ann_info`` record).
"""
from __future__ import annotations

import math

from retrieval.ann.config import AnnConfig, AnnParams
from retrieval.ann.plan import IndexPlan, choose_index
from retrieval.ann.selection import search_grid
from retrieval.errors import InvalidInput
from retrieval.store.lance_ann import BUILD_KEYS, FAISS_KINDS, FAISS_SEARCH_KEYS

# Lance's ``index_type`` of a vector index -> the kind clipdex records
INDEX_TYPES = {
    "IvfPq": "IVF_PQ",
    "IvfFlat": "IVF_FLAT",
    "IvfSq": "IVF_SQ",
    "IvfRq": "IVF_RQ",
    "IvfHnswSq": "IVF_HNSW_SQ",
    "IvfHnswPq": "IVF_HNSW_PQ",
    "IvfHnswFlat": "IVF_HNSW_FLAT",
}
KINDS = ("IVF_PQ", "IVF_FLAT", "IVF_SQ", "IVF_HNSW_SQ", "IVF_HNSW_PQ", "IVF_HNSW_FLAT")  # what a user may build
SEARCH_KEYS = ("nprobes", "refine_factor", "ef", *FAISS_SEARCH_KEYS)  # Lance's knobs, then the sidecar's
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


def has_id_index(table) -> bool:
    """Whether a LanceDB table has a scalar index on ``id``."""
    return any(list(getattr(ix, "columns", []))[:1] == ["id"] for ix in table.list_indices())


def check_kind(kind: str) -> str:
    """The index kind ``kind`` names ("auto", "flat" and FAISS kinds as they are, Lance's types in upper case);
    ``InvalidInput`` for any other."""
    if kind in ("auto", "flat", *FAISS_KINDS):
        return kind
    if kind.upper() in KINDS:
        return kind.upper()
    raise InvalidInput(f"unknown index type {kind!r}; choose one of flat, {', '.join(KINDS)} (Lance's) or "
                       f"{', '.join(FAISS_KINDS)} (a FAISS index beside the table)")


def wanted_index(ann: AnnConfig, n: int, dim: int) -> dict:
    """What ``ann`` asks for on a table of ``n`` rows of ``dim``-dimensional vectors: {"kind": Lance index type |
    FAISS kind | "flat", "build": create_index (or FAISS build) params, "params": search params, and "factory" for
    a FAISS kind}."""
    kind = check_kind(ann.kind)
    p = ann.params
    if kind == "flat" or (kind == "auto" and n < ann.exact_below):
        return {"kind": "flat", "build": {}, "params": {}}
    plan = choose_index(n, dim, p.memory, p.recall, ann.exact_below, kind=kind if kind in FAISS_KINDS else None)
    if kind == "auto":  # the rule's FAISS structure (``optimize`` measures the candidates instead)
        kind = plan.kind
    if kind in FAISS_KINDS:
        search = {**plan.search, **p.search.as_dict()}
        return {
            "kind": kind,
            "factory": p.factory or plan.factory,
            "build": {**plan.build, **p.build},
            "params": {k: v for k, v in search.items() if k in FAISS_SEARCH_KEYS},
        }
    return _lance_index(kind, n, dim, plan, p)


def _lance_index(kind: str, n: int, dim: int, plan: IndexPlan, p: AnnParams) -> dict:
    """One of Lance's own indexes: about sqrt(n) partitions (the plan's nlist) with at least 40 rows each."""
    parts = max(1, min(int(plan.build.get("nlist", round(math.sqrt(n)))), max(1, n // 40)))
    build = {"index_type": kind, "num_partitions": parts}
    if "PQ" in kind:
        build["num_sub_vectors"] = sub_vectors(dim)
    build.update({k: v for k, v in p.build.items() if k in BUILD_KEYS})
    search = {"nprobes": max(1, min(20, parts))}
    if kind in ("IVF_PQ", "IVF_SQ"):
        search["refine_factor"] = 10
    if "HNSW" in kind:
        search["ef"] = 64
    search.update({k: v for k, v in p.search.as_dict().items() if k in SEARCH_KEYS})
    return {"kind": kind, "build": build, "params": search}


def sub_vectors(dim: int) -> int:
    """PQ sub-vectors for ``dim``: the largest divisor of ``dim`` that is at most dim // 8 (8 dimensions each)."""
    sub = max(1, dim // 8)
    while dim % sub:
        sub -= 1
    return sub


def tuning_grid(info: dict) -> dict:
    """Search parameters tuning may try for the index ``info`` describes (name -> increasing values)."""
    kind = info["kind"]
    if kind == "flat":
        return {}
    if info.get("engine") == "faiss":
        return search_grid(IndexPlan(kind, info["factory"], info.get("build", {})))
    parts = int(info.get("build", {}).get("num_partitions") or 256)
    nprobes = [v for v in NPROBES if v <= parts]
    if parts not in nprobes:
        nprobes.append(parts)
    if kind.startswith("IVF_HNSW"):
        return {"nprobes": nprobes, "ef": [32, 128, 512]}
    if kind in ("IVF_PQ", "IVF_SQ", "IVF_RQ"):
        return {"nprobes": nprobes, "refine_factor": [1, 5, 20, 50]}
    return {"nprobes": nprobes}

"""Planning an approximate nearest-neighbour index (the exact oracle is in ``retrieval/ann/exact.py``).

- :func:`choose_index` picks an index from row count, dimension, memory budget and recall target, with build and
  search parameters and an estimate of build time and memory.
- Tuning a built index's search parameters to the target is ``retrieval/ann/grid_tuning.py``.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

from retrieval.ann.assign import assignment_cost
from retrieval.errors import InvalidInput

try:  # optional: the machine's RAM (sysconf otherwise)
    import psutil
except ImportError:  # pragma: no cover - psutil ships with the dev extra
    psutil = None

KINDS = ("flat", "hnsw", "ivf_flat", "ivf_sq8", "ivf_pq_fs")
DISK_KIND = "ivf_pq_disk"  # codes in memory, refined from vectors on disk: a store that keeps them (Lance's)
DEFAULT_RECALL = 0.95
DEFAULT_EXACT_BELOW = 100_000
CONFIDENCE_Z = 1.645  # tuning judges a setting by the 95% lower bound of its recall over the held-out queries


# -- choosing an index -----------------------------------------------------------------------------------------
@dataclass
class IndexPlan:
    """What to build. ``factory`` is the faiss index_factory string (inner product); ``search`` the initial
    search parameters. The knobs tuning walks are a function of the structure (``selection.search_grid``)."""

    kind: str
    factory: str
    build: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    memory_bytes: int = 0
    build_seconds: float = 0.0
    reason: str = ""
    disk_bytes: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def default_memory_budget(fraction: float = 0.5) -> int:
    """A fraction of the machine's RAM (psutil's total, or sysconf), in bytes."""
    if psutil is not None:
        total = psutil.virtual_memory().total
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * fraction)


def parse_memory(text: str | int | float) -> int:
    """'8G', '512M', '1.5GB', 1e9 -> bytes."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip().upper().removesuffix("IB").removesuffix("B")
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(s[-1:], 1)
        try:
            value = float(s[:-1] if s[-1:] in "KMGT" else s) * mult
        except ValueError:
            raise InvalidInput(f"--memory {text!r} is not a size; write it like 8G or 512M") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"--memory must be a positive size, got {text!r}")
    return int(value)


def check_recall(recall: float) -> float:
    if not (isinstance(recall, (int, float)) and 0 < recall <= 1):
        raise InvalidInput(f"--recall must be in (0, 1], got {recall}")
    return float(recall)


def default_nlist(n: int) -> int:
    """Inverted lists: about 2 sqrt(n), a power of two, and at least 39 training points per list."""
    nl = 1 << max(3, round(math.log2(max(2 * math.sqrt(n), 8))))
    while nl > 8 and n < 39 * nl:
        nl //= 2
    return nl


def _gflops() -> float:
    return 8.0 * max(1, min(os.cpu_count() or 1, 16))  # conservative sustained GEMM throughput


def choose_index(n: int, d: int, memory_budget: int | None = None, recall_target: float = DEFAULT_RECALL,
                 exact_below: int = DEFAULT_EXACT_BELOW, kind: str | None = None, disk: bool = False) -> IndexPlan:
    """Pick an index for n vectors of dimension d (4d bytes each as float32).

    - n < exact_below, or everything else fails the budget check last: ``flat`` (exact, 4dn bytes).
    - half the raw vectors fit in the budget with room for lists: ``ivf_pq_fs`` = IVF{nlist},PQ{d/2}x4fs refined
      on float16 copies of the vectors (Refine(SQfp16)): fast-scan codes pick candidates, float16 scores (within
      about 1e-4 of the float32 ones) rank them; tuned on nprobe, k_factor. Half the memory of refining on float32
      vectors (RFlat) for the same recall: peak memory stays under twice the raw vectors while building.
      With a recall target above 0.99, ``ivf_flat`` (exact scores inside probed lists; tuned on nprobe).
    - with ``disk`` (the store can keep vectors beside the index), the in-memory float16 copy does not fit but
      the codes do: ``ivf_pq_disk`` = the same codes, refined by float16 vectors read from a memory-mapped file
      (m/2 + 8 bytes a vector in memory, 2d + 24 on disk; tuned on nprobe, k_factor). Flat and every in-memory
      copy of the vectors are then impossible.
    - only d bytes per vector fit: ``ivf_sq8`` (8-bit scalar quantizer, tuned on nprobe).
    - less: IVF-PQ fast scan refined by SQ8 codes, or unrefined when even that does not fit.
    ``kind`` forces one of KINDS (``hnsw`` = HNSW{M},Flat with M by recall target).
    """
    budget = int(memory_budget if memory_budget is not None else default_memory_budget())
    nlist = default_nlist(n)
    m_pq = max(1, d // 2)  # 2 dimensions per 4-bit sub-quantizer: at 4 or 8 dimensions the codes miss true
    while d % m_pq:        # neighbours of text-to-image queries that no refinement recovers (benchmarks/ANN.md)
        m_pq -= 1
    M = 16 if recall_target <= 0.9 else 32 if recall_target <= 0.97 else 48
    per = {"flat": 4 * d, "hnsw": 4 * d + 8 * M + 16, "ivf_flat": 4 * d + 8, "ivf_sq8": d + 8,
           "ivf_pq_fs": m_pq // 2 + 8 + 2 * d, DISK_KIND: m_pq // 2 + 8, "ivf_pq_fs_sq8": m_pq // 2 + 8 + d,
           "ivf_pq_fs_bare": m_pq // 2 + 8}
    if kind is None:
        if n < exact_below:
            choice, why = "flat", f"{n} rows < {exact_below}: exact search is cheap"
        elif recall_target > 0.99 and n * per["ivf_flat"] <= budget:
            choice, why = "ivf_flat", "recall target above 0.99: exact scores inside the probed lists"
        elif n * per["ivf_pq_fs"] <= budget:
            choice, why = "ivf_pq_fs", "vectors fit in memory: fast-scan PQ candidates refined on float16 vectors"
        elif disk and n * per[DISK_KIND] <= budget:
            choice, why = DISK_KIND, (f"the float16 copy ({_gib(n * 2 * d)}) does not fit the {_gib(budget)} budget: "
                                      "fast-scan PQ codes in memory, refined from float16 vectors on disk")
        elif n * per["ivf_sq8"] <= budget:
            choice, why = "ivf_sq8", "memory-bound: 8-bit scalar quantizer"
        elif n * per["ivf_pq_fs_sq8"] <= budget:
            choice, why = "ivf_pq_fs_sq8", "memory-bound: fast-scan PQ refined on SQ8 codes"
        else:
            choice, why = "ivf_pq_fs_bare", "tight memory: fast-scan PQ codes only (recall may fall short)"
    else:
        choice, why = kind, "asked for"
    train = min(n, max(50 * nlist, 20_000))
    if choice == "flat":
        plan = IndexPlan("flat", "Flat", {}, {})
    elif choice == "hnsw":
        plan = IndexPlan("hnsw", f"HNSW{M},Flat", {"M": M, "efConstruction": 2 * M + 16}, {"efSearch": 64})
    elif choice in ("ivf_flat", "ivf_sq8"):
        code = "Flat" if choice == "ivf_flat" else "SQ8"
        plan = IndexPlan(choice, f"IVF{nlist},{code}", {"nlist": nlist, "train_rows": train}, {"nprobe": 16})
    elif choice == DISK_KIND:
        build = {"nlist": nlist, "m": m_pq, "train_rows": train, "refine": "disk"}
        plan = IndexPlan(DISK_KIND, f"IVF{nlist},PQ{m_pq}x4fs", build, {"nprobe": 16, "k_factor": 8})
        plan.disk_bytes = int(n * (m_pq // 2 + 8 + 2 * d + 16))
    elif choice.startswith("ivf_pq_fs"):
        refine = {"ivf_pq_fs": ",Refine(SQfp16)", "ivf_pq_fs_sq8": ",Refine(SQ8)"}.get(choice, "")
        build = {"nlist": nlist, "m": m_pq, "train_rows": train, "refine": refine[1:] or None}
        search = {"nprobe": 16}
        if refine:
            search["k_factor"] = 8
        plan = IndexPlan("ivf_pq_fs", f"IVF{nlist},PQ{m_pq}x4fs{refine}", build, search)
    else:
        raise InvalidInput(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    plan.memory_bytes = int(n * per[choice] + (nlist * d * 4 if choice.startswith("ivf") else 0))
    plan.build_seconds = round(_estimate_build_seconds(plan.kind, n, d, nlist, train, M), 1)
    plan.reason = why
    return plan


def _gib(nbytes: float) -> str:
    return f"{nbytes / (1 << 30):.2f} GiB"


def _estimate_build_seconds(kind: str, n: int, d: int, nlist: int, train: int, M: int) -> float:
    """Rough flop counts / a conservative throughput: k-means (10 iterations), assignment, HNSW insertions."""
    g = _gflops() * 1e9
    if kind == "flat":
        return n * d * 4 / 2e9  # copying
    if kind == "hnsw":
        return n * (2 * M + 16) * M * 2 * d * 2 / (g / 8)  # distance computations run far below GEMM speed
    kmeans = 10 * 2 * train * nlist * d
    assign = assignment_cost(n, d, nlist)  # through a projected shortlist from FAST_ASSIGN_MIN_LISTS lists on
    return (kmeans + assign) / g + n * d * 4 / 1e9

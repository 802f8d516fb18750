"""What ``optimize`` is asked to build: the index kind, the size below which search stays exact, and typed options.

``AnnConfig(kind, exact_below, params)``: ``params`` is an :class:`AnnParams`; a plain dict with the older keys
(``{"recall": 0.9, "memory": ..., "nprobe": 8, "M": 32, "build": {...}, "rebuild": True}``) is accepted and
converted, and an unknown key is refused with ``InvalidInput``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from retrieval.ann.plan import DEFAULT_EXACT_BELOW, DEFAULT_RECALL
from retrieval.errors import InvalidInput

# build parameters older callers passed at the top level of the params dict
_BUILD_KEYS = ("M", "efConstruction", "nlist", "train_rows", "num_partitions", "num_sub_vectors", "m",
               "ef_construction")


@dataclass(frozen=True)
class SearchKnobs:
    """Search parameters, each None unless set. FAISS: ``nprobe`` (IVF lists probed), ``efSearch`` (HNSW
    candidate list), ``k_factor`` (refinement: candidates re-ranked per result); LanceDB: ``nprobes``,
    ``refine_factor``, ``ef``."""

    nprobe: int | None = None
    efSearch: int | None = None
    k_factor: float | None = None
    nprobes: int | None = None
    refine_factor: int | None = None
    ef: int | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def as_dict(self) -> dict:
        """The knobs that are set, as the ANN record stores them."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class AnnParams:
    """Options of an ANN build. ``recall``: the recall@10 target the search knobs are tuned to; ``memory``: bytes
    the index may use (None: half the machine's RAM); ``tune``: tune the knobs after a build (``Index.optimize``);
    ``rebuild``: build even when the index there is matches; ``factory``: a FAISS index_factory string (a measured
    choice); ``build``: build parameters (FAISS nlist, M, efConstruction, train_rows; LanceDB num_partitions,
    num_sub_vectors, m, ef_construction); ``search``: initial search knobs overriding the planned ones."""

    recall: float = DEFAULT_RECALL
    memory: int | None = None
    tune: bool = True
    rebuild: bool = False
    factory: str | None = None
    build: dict = field(default_factory=dict)
    search: SearchKnobs = field(default_factory=SearchKnobs)

    @classmethod
    def from_dict(cls, params: dict) -> "AnnParams":
        """Older callers' dicts: build and search keys may sit at the top level."""
        own = {f.name for f in fields(cls)} - {"search", "build"}
        build = dict(params.get("build") or {})
        search = {}
        for key, value in params.items():
            if key in own or key == "build":
                continue
            if key in SearchKnobs.names():
                search[key] = value
            elif key in _BUILD_KEYS:
                build[key] = value
            else:
                raise InvalidInput(f"unknown ANN parameter {key!r}; known: "
                                   f"{', '.join(sorted(own | set(SearchKnobs.names()) | set(_BUILD_KEYS)))}")
        return cls(**{k: params[k] for k in own if k in params and params[k] is not None}, build=build,
                   search=SearchKnobs(**search))


@dataclass
class AnnConfig:
    """How a table is searched. ``kind`` "auto" builds an ANN index once a table has ``exact_below`` rows or more;
    "flat" always searches exactly; any other value names the backend's index kind (checked by the store before
    it changes anything). ``params``: :class:`AnnParams` (a dict is converted)."""

    kind: str = "auto"
    exact_below: int = DEFAULT_EXACT_BELOW
    params: AnnParams = field(default_factory=AnnParams)

    def __post_init__(self) -> None:
        if isinstance(self.params, dict):
            self.params = AnnParams.from_dict(self.params)
        if not isinstance(self.kind, str) or not self.kind:
            raise InvalidInput(f"an index kind is a name such as auto, flat or hnsw, not {self.kind!r}")

"""The classification methods, registered once: name -> :class:`Method` (which inputs it needs, whether ``all``
includes it, and the builder that makes its runner from the run's prepared inputs).

The pipeline, ``--method`` in the CLI and ``all`` all read this table; adding a method is one entry here and one
builder in ``retrieval.classify.prepare``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from retrieval.classify import prepare as P
from retrieval.classify.methods import Runner
from retrieval.errors import InvalidInput

ALL = "all"


@dataclass(frozen=True)
class Method:
    """A classification method. ``needs``: "support" (a support index), "shots" (labelled few-shot images) or
    None (class names alone); ``in_all``: part of ``--method all``; ``build(inputs)``: its runner, or None when
    it skips itself (see ``MethodInputs.skip``)."""

    name: str
    build: Callable[[P.MethodInputs], Runner | None]
    needs: str | None = None
    in_all: bool = True


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("zeroshot", P.build_zeroshot),
    Method("susx", P.build_susx, needs="support"),
    Method("xmore", P.build_xmore, needs="support"),
    Method("xmore-stream", P.build_xmore_stream, needs="support", in_all=False),
    Method("reco", P.build_reco, needs="support"),
    Method("tip", P.build_tip, needs="shots"),
    Method("tipx", P.build_tipx, needs="shots"),
    Method("gda", P.build_gda, needs="shots"),
    Method("proker", P.build_proker, needs="shots"),
)}

_NEEDS = {
    "support": ("support", "--support INDEX (a clipdex image index made with the same model)"),
    "shots": ("shots", "--shots (a folder per class or a manifest with a label column)"),
}


def resolve_methods(asked: Sequence[str], options: P.ClassifyOptions) -> list[Method]:
    """The methods to run, in order: ``all`` means every method of ``all`` that the given inputs (support,
    shots) allow; a method asked for by name without its input is refused."""
    asked = list(dict.fromkeys(asked))
    unknown = [m for m in asked if m not in METHODS and m != ALL]
    if unknown:
        raise InvalidInput(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)} or {ALL}")
    has = {need: bool(getattr(options, field)) for need, (field, _) in _NEEDS.items()}
    names = asked
    if ALL in asked:
        names = [m.name for m in METHODS.values() if m.in_all and (m.needs is None or has[m.needs])]
        names += [m for m in asked if m != ALL and m not in names]
    for name in names:
        need = METHODS[name].needs
        if need is not None and not has[need]:
            raise InvalidInput(f"--method {name} needs {_NEEDS[need][1]}")
    return [METHODS[n] for n in names]

"""How the functions of ``import clipdex`` read their arguments, in one place: an index given as an open
:class:`Index` or as a path, sources given as one path or a list, and options given as the library's dataclass
and/or keyword arguments naming its fields.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Callable, Iterator, Sequence, TypeVar, Union

from retrieval.errors import InvalidInput
from retrieval.index.directory import NO_MODEL, Index, open_index
from retrieval.index.opening import check_writer_model, open_for_writing
from retrieval.io.workers import Progress

PathLike = Union[str, os.PathLike]
Sources = Union[PathLike, Sequence[PathLike]]
OnProgress = Callable[[Progress], None]
Options = TypeVar("Options")


def path_list(sources: Sources, what: str = "sources") -> list[str]:
    """One path or a list of them (str or ``pathlib.Path``) -> a list of str; ``InvalidInput`` when empty."""
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not items:
        raise InvalidInput(f"no {what} given")
    bad = [s for s in items if not isinstance(s, (str, os.PathLike))]
    if bad:
        raise TypeError(f"{what} are paths (str or pathlib.Path), not {type(bad[0]).__name__}")
    return [os.fspath(s) for s in items]


def with_changes(cls: type[Options], given: Options | None, changes: dict) -> Options:
    """``given`` (default: ``cls()``) with the fields named in ``changes`` replaced; ``TypeError`` naming the
    fields of ``cls`` when ``changes`` names another."""
    if given is not None and not isinstance(given, cls):
        raise TypeError(f"options must be a {cls.__name__}, not {type(given).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in changes if k not in names]
    if unknown:
        raise TypeError(f"unknown option {unknown[0]!r}; {cls.__name__} has {', '.join(names)}")
    return dataclasses.replace(given if given is not None else cls(), **changes)


def check_index(index) -> None:
    """``TypeError`` unless ``index`` is an :class:`Index` or a path (checked before any source is read)."""
    if not isinstance(index, (Index, str, os.PathLike)):
        raise TypeError(f"index must be an Index or a path, not {type(index).__name__}")


@contextlib.contextmanager
def writable(index: Index | PathLike, model: str | None = None, device: str | None = None,
             dim: int | None = None) -> Iterator[Index]:
    """``index`` itself (checked against ``model`` when given), or the index at that path opened for writing and
    closed afterwards: created when absent with ``model`` (default: the default model) or, for ``model="none"``,
    vectors of ``dim``, as ``clipdex index ...`` does. ``device``: load the index's encoder there."""
    check_index(index)
    if not isinstance(index, Index):
        ix = open_for_writing(index, model, dim=dim, device=device)
        try:
            yield ix
        finally:
            ix.close()
        return
    check_writer_model(index, model)
    if device is not None and index.model != NO_MODEL:
        index.encoder(device=device)
    yield index


@contextlib.contextmanager
def readable(index: Index | PathLike) -> Iterator[Index]:
    """``index`` itself, or the index at that path opened read-only and closed afterwards."""
    check_index(index)
    if isinstance(index, Index):
        yield index
        return
    with open_index(index) as ix:
        yield ix

"""Open an index for writing, or create it: the one place every writer (``clipdex index images|texts|videos|
embeddings``, scripts) gets its index from.

    ix = open_for_writing("photos.clipdex", model="clipdex-tiny")              # images, texts, videos
    ix = open_for_writing("vecs.clipdex", model="none", dim=512)                 # precomputed embeddings

An existing index is opened writable and checked against what the caller asked for (model, backend, vector
dimension): a mismatch is refused with a one-line error before anything is written. A missing one is created
with the model's spec and dimension (``model="none"``: raw vectors of dimension ``dim``).
"""
from __future__ import annotations

from pathlib import Path

from retrieval.encode.encoder import load_encoder
from retrieval.errors import IndexExists, InvalidInput, ModelMismatch
from retrieval.index.directory import MANIFEST, NO_MODEL, Index, create_index, open_index
from retrieval.models.specs import parse_model_spec

DEFAULT_BACKEND = "lance"


def open_for_writing(path: str | Path, model: str | None = None, backend: str | None = None, *,
                     dim: int | None = None, device: str | None = None) -> Index:
    """The index at ``path`` opened for writing, created when absent.

    ``model``: a model spec, ``"none"`` for vectors of an unknown model, or None (an existing index keeps its
    own; a new one gets the default model). ``backend``: lance or faiss for a new index (default lance); an
    existing index on the other backend is refused. ``dim``: the dimension of vectors brought by the caller
    (``index embeddings``): a model that makes vectors of another size is refused. ``device``: load the index's
    encoder there now (cuda, cuda:N, cpu).
    """
    if (Path(path).expanduser() / MANIFEST).is_file():
        ix = open_index(path, writable=True)
        try:
            _check_existing(ix, model, backend)
        except Exception:
            ix.close()
            raise
    else:
        ix = _create(path, model, backend, dim, device)
    if device is not None and ix.model != NO_MODEL:
        ix.encoder(device=device)
    return ix


def _check_existing(ix: Index, model: str | None, backend: str | None) -> None:
    if backend is not None and backend != ix.backend:
        raise IndexExists(f"{ix.path} uses the {ix.backend} backend, not {backend}")
    check_writer_model(ix, model)


def check_writer_model(ix: Index, model: str | None) -> None:
    """Refuse (``ModelMismatch``) rows declared as made by ``model`` (a spec, or ``"none"`` for vectors of an
    unknown model) for an index pinned to another model; None checks nothing."""
    if model is None:
        return
    asked = NO_MODEL if model == NO_MODEL else str(parse_model_spec(model))
    if asked != ix.model:
        raise ModelMismatch(f"{ix.path} was built with {_what(ix.model)}, not {_what(asked)}; write into it with "
                            f"--model {ix.model}, or into a new index")


def _what(model: str) -> str:
    return "vectors of an unknown model (--model none)" if model == NO_MODEL else model


def _create(path, model: str | None, backend: str | None, dim: int | None, device: str | None) -> Index:
    if model == NO_MODEL:
        if dim is None:
            raise InvalidInput("an index of vectors without a model needs their dimension")
        return create_index(path, dim=dim, model=NO_MODEL, backend=backend or DEFAULT_BACKEND)
    enc = load_encoder(model, device=device)
    if dim is not None and enc.dim != dim:
        raise InvalidInput(f"{enc.spec} makes {enc.dim}-d vectors; the vectors given are {dim}-d")
    return create_index(path, dim=enc.dim, model=str(enc.spec), backend=backend or DEFAULT_BACKEND)

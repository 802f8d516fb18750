"""clipdex's library: encoder, index directory and stores, search, video, long text and classification.

The library never prints: it logs through ``logging`` and reports progress through callbacks.
"""
from retrieval.version import __version__  # noqa: F401

from retrieval.errors import (ClipdexError, IndexExists, IndexFormatError, IndexLocked, IndexNotFound, InvalidFilter,  # noqa: F401
                     InvalidInput, ModelMismatch, TableNotFound, UnknownModel, WeightsUnavailable)
from retrieval.index.directory import Index, create_index, open_index  # noqa: F401


def load_encoder(spec=None, device=None, precision=None):
    """Load a CLIP model once per process (see ``retrieval.encode.encoder.load_encoder``)."""
    from retrieval.encode.encoder import load_encoder as _load

    return _load(spec, device=device, precision=precision)


def search(index, text=None, **kwargs):
    """Search an index with a text, ``image=`` or ``vectors=`` (see ``retrieval.search.query.search``)."""
    from retrieval.search.query import search as _search

    return _search(index, text, **kwargs)

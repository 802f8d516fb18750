"""clipdex's library: encoder, index directory and stores, search, video, long text and classification.

The library never prints: it logs through ``logging`` and reports progress through callbacks.
"""
__version__ = "0.1.0"

from .errors import (ClipdexError, IndexExists, IndexFormatError, IndexNotFound, InvalidFilter,  # noqa: F401
                     InvalidInput, ModelMismatch, TableNotFound, UnknownModel, WeightsUnavailable)
from .index import Index, create_index, open_index  # noqa: F401


def load_encoder(spec=None, device=None, precision=None):
    """Load a CLIP model once per process (see ``retrieval.encoder.load_encoder``)."""
    from .encoder import load_encoder as _load

    return _load(spec, device=device, precision=precision)


def search(index, text=None, **kwargs):
    """Search an index with a text, ``image=`` or ``vectors=`` (see ``retrieval.search.search``)."""
    from .search import search as _search

    return _search(index, text, **kwargs)

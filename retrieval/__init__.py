"""clipdex's library: encoder, index directory and stores, search, video, long text and classification.

The library never prints: it logs through ``logging`` and reports progress through callbacks. The names below are
the Python API of the README (query-time code lives in ``retrieval.query``, so that ``retrieval.search`` is only
ever this function).
"""
from retrieval.encode.encoder import load_encoder  # noqa: F401
from retrieval.errors import (  # noqa: F401
                              ClipdexError,
                              IndexExists,
                              IndexFormatError,
                              IndexLocked,
                              IndexNotFound,
                              InvalidFilter,
                              InvalidInput,
                              ModelMismatch,
                              TableNotFound,
                              UnknownModel,
                              WeightsUnavailable,
)
from retrieval.index.directory import Index, create_index, open_index  # noqa: F401
from retrieval.query.search import search  # noqa: F401
from retrieval.version import __version__  # noqa: F401

"""clipdex's library: encoder, index directory and stores, search, video, long text and classification.

The library never prints: it logs through ``logging`` and reports progress through callbacks. The names below are
the Python API of the README; ``search`` is bound after the ``retrieval.search`` package is imported, so the
function (not the package) is what ``from retrieval import search`` gives, whatever was imported before.
"""
from retrieval.version import __version__  # noqa: F401

from retrieval.errors import (ClipdexError, IndexExists, IndexFormatError, IndexLocked, IndexNotFound,  # noqa: F401
                              InvalidFilter, InvalidInput, ModelMismatch, TableNotFound, UnknownModel,
                              WeightsUnavailable)
from retrieval.index.directory import Index, create_index, open_index  # noqa: F401
from retrieval.encode.encoder import load_encoder  # noqa: F401
from retrieval.search.query import search  # noqa: F401  (rebinds the name the subpackage import set)

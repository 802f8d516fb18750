"""clipdex: index images, videos and texts with CLIP, then search and classify them.

    import clipdex

    index = clipdex.create_index("photos.clipdex", model="clipdex-tiny")
    clipdex.index_images(index, "./photos")                  # only new and changed files are embedded
    hits = clipdex.search(index, "a red circle", k=5)        # a pyarrow Table: rank, score, id, path, ...
    index.close()

``import clipdex`` is the public Python API: the names in ``__all__``, documented on each. They load on first use,
so importing clipdex is cheap and never imports torch (a model loads when something needs one). The packages
beside it, ``retrieval`` (the library), ``indexers`` (the offline pipelines) and ``cli``, are clipdex's internals:
their modules may change between versions. ``clipdex.serve`` is the HTTP service and ``clipdex.synthetic`` the
generated data sets of the demo, the tests and the notebooks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from retrieval.errors import (
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
    WorkersUnavailable,
)
from retrieval.version import __version__

if TYPE_CHECKING:  # what the names below are, for type checkers and editors (at run time they load on first use)
    from clipdex.duplicates import DedupOptions, DedupResult, dedup
    from clipdex.indexing import (
        EmbeddingSummary,
        ImageIndexOptions,
        Index,
        IndexSummary,
        TextIndexOptions,
        TextIndexSummary,
        VideoIndexOptions,
        VideoIndexSummary,
        create_index,
        index_embeddings,
        index_images,
        index_texts,
        index_videos,
        open_index,
    )
    from clipdex.querying import (
        CLASSIFY_METHODS,
        ClassifyOptions,
        ClipEncoder,
        EvalQuery,
        Prediction,
        TextEncoding,
        VideoSearchOptions,
        classify,
        encode_long_texts,
        evaluate_classification,
        evaluate_retrieval,
        load_encoder,
        search,
        search_videos,
    )
    from clipdex.words import HybridOptions, OcrOptions, OcrSummary, hybrid_search, ocr_images

# where each lazily loaded name lives
_INDEXING = ("Index", "create_index", "open_index", "index_images", "index_videos", "index_texts",
             "index_embeddings", "ImageIndexOptions", "VideoIndexOptions", "TextIndexOptions", "IndexSummary",
             "VideoIndexSummary", "TextIndexSummary", "EmbeddingSummary")
_QUERYING = ("search", "search_videos", "VideoSearchOptions", "classify", "CLASSIFY_METHODS", "ClassifyOptions",
             "Prediction", "evaluate_retrieval", "EvalQuery", "evaluate_classification", "load_encoder",
             "ClipEncoder", "encode_long_texts", "TextEncoding")
_DUPLICATES = ("dedup", "DedupOptions", "DedupResult")
_WORDS = ("hybrid_search", "HybridOptions", "ocr_images", "OcrOptions", "OcrSummary")

__all__ = [
    "__version__",
    # indexes and indexing (clipdex.indexing)
    "Index", "create_index", "open_index", "index_images", "index_videos", "index_texts", "index_embeddings",
    "ImageIndexOptions", "VideoIndexOptions", "TextIndexOptions", "IndexSummary", "VideoIndexSummary",
    "TextIndexSummary", "EmbeddingSummary",
    # search, classification, evaluation, the encoder (clipdex.querying)
    "search", "search_videos", "VideoSearchOptions", "classify", "CLASSIFY_METHODS", "ClassifyOptions",
    "Prediction", "evaluate_retrieval", "EvalQuery", "evaluate_classification", "load_encoder", "ClipEncoder",
    "encode_long_texts", "TextEncoding",
    # near-duplicates (clipdex.duplicates)
    "dedup", "DedupOptions", "DedupResult",
    # words and pictures: keyword + OCR + vector search fused, query arithmetic (clipdex.words)
    "hybrid_search", "HybridOptions", "ocr_images", "OcrOptions", "OcrSummary",
    # errors: every failure a user can act on is a ClipdexError with a one-line message
    "ClipdexError", "IndexExists", "IndexFormatError", "IndexLocked", "IndexNotFound", "InvalidFilter",
    "InvalidInput", "ModelMismatch", "TableNotFound", "UnknownModel", "WeightsUnavailable",
    "WorkersUnavailable",
]


def __getattr__(name: str):
    """Load a public name on first use (then it is an ordinary module attribute)."""
    if name in _INDEXING:
        from clipdex import indexing as home  # deferred: the indexers bring pyarrow, LanceDB and the encoders' code
    elif name in _QUERYING:
        from clipdex import querying as home  # deferred: search and classification bring the same
    elif name in _DUPLICATES:
        from clipdex import duplicates as home  # deferred: the same library, and imagehash when images are compared
    elif name in _WORDS:
        from clipdex import words as home  # deferred: the same library (OCR's engine loads only when reading)
    else:
        raise AttributeError(f"module 'clipdex' has no attribute {name!r}")
    value = getattr(home, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

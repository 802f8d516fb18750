"""Words and pictures in ``import clipdex``: hybrid search (vector + keyword, fused; why each hit matched), query
arithmetic, and OCR at index time, as ``clipdex search --mode`` and ``clipdex index images --ocr`` do.

    import clipdex

    clipdex.ocr_images("photos.clipdex")                         # read the text in every new picture (offline)
    hits = clipdex.hybrid_search("photos.clipdex", "invoice 2024", explain=True)  # matched, ocr, vector_rank, ...
    beach = clipdex.hybrid_search("photos.clipdex", '"beach" + "sunset:0.5" - "people"', mode="vector")
"""
from __future__ import annotations

from typing import Sequence

import pyarrow as pa

from clipdex.arguments import OnProgress, PathLike, readable, with_changes, writable
from indexers.ocr import OcrOptions, OcrSummary
from indexers.ocr import ocr_images as run_ocr
from retrieval.index.directory import Index
from retrieval.query.hybrid import DEFAULT_FUSION, HybridOptions
from retrieval.query.hybrid import hybrid_search as run_hybrid

__all__ = ["HybridOptions", "OcrOptions", "OcrSummary", "hybrid_search", "ocr_images"]


def hybrid_search(index: Index | PathLike, text: str | None = None, *, image=None, vectors=None,
                  words: str | None = None, add: Sequence = (), subtract: Sequence = (), k: int = 10,
                  table: str = "images", where: str | None = None, min_score: float | None = None,
                  mode: str = "auto", weights: tuple[float, float] = (1.0, 1.0), fusion: str = DEFAULT_FUSION,
                  explain: bool = False, long_text: str | None = None, encoder=None) -> pa.Table:
    """Search ``table`` by what its pictures show and by the words they carry (paths, captions, metadata, texts,
    OCR): ``mode`` vector | text | hybrid | auto (hybrid when the index ran OCR); ``weights`` (vector, keyword)
    and ``fusion`` (``complete``: reciprocal-rank fusion, k=60, with the keyword hits that carry every query
    word first when only some do; ``rrf``: plain; ``score``) for hybrid. ``text`` may be query arithmetic
    (``'"beach" + "sunset:0.5" - "people"'``); ``add`` / ``subtract``: more terms (texts, image paths or PIL
    images). ``where`` and ``min_score`` (the least cosine) as in :func:`clipdex.search`. ``explain`` adds
    ``vector_rank``, ``text_rank``, ``matched`` and ``ocr``. ``vectors`` + ``words``: a query vector and the
    words to look for, no model needed."""
    options = HybridOptions(mode=mode, weights=tuple(weights), fusion=fusion, explain=explain)
    with readable(index) as ix:
        return run_hybrid(ix, text, image=image, vectors=vectors, words=words, add=add, subtract=subtract, k=k,
                          table=table, where=where, min_score=min_score, long_text=long_text, encoder=encoder,
                          options=options)


def ocr_images(index: Index | PathLike, options: OcrOptions | None = None, *, on_progress: OnProgress | None = None,
               **changes) -> OcrSummary:
    """Read the text in every picture of the ``images`` table that was not read before (``clipdex index images
    --ocr``; the ``ocr`` extra). ``changes``: fields of :class:`OcrOptions` (``retry_errors``, ``max_side``,
    ``min_confidence``, ``threads``). Returns an :class:`OcrSummary` (read, with_text, lines, unchanged, errors,
    removed, images_per_s)."""
    opts = with_changes(OcrOptions, options, changes)
    with writable(index) as ix:
        return run_ocr(ix, opts, on_progress)

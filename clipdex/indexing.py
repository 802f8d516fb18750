"""The indexing half of ``import clipdex``: create or open an index, and bring it up to date with images, videos,
texts or your own embeddings. Each ``index_*`` function does what its ``clipdex index ...`` command does, with the
same defaults, on the same pieces (``indexers/``); it returns the indexer's summary (a dataclass; ``as_dict()``).

An ``index`` argument is an open :class:`Index` (opened writable, or made by :func:`create_index`) or a path, which
is opened for writing and closed afterwards (created when absent, with ``model`` or the default model, as the
CLI does). Sources are a path or a list of paths (``str`` or ``pathlib.Path``); options are the indexer's
dataclass (``ImageIndexOptions`` ...) and/or keyword arguments naming its fields (``batch_size=32, workers=0``).
Bad sources and options are refused (``InvalidInput``) before the index is touched.
"""
from __future__ import annotations

from typing import Any, Sequence

from clipdex.arguments import OnProgress, PathLike, Sources, check_index, path_list, with_changes, writable
from indexers.embedding_sources import discover_embeddings
from indexers.embeddings import EmbeddingSummary
from indexers.embeddings import index_embeddings as run_embeddings
from indexers.image_sources import discover_image_sources, index_image_sources
from indexers.images import ImageIndexOptions, IndexSummary
from indexers.text_sources import TextDiscovery, discover_texts
from indexers.texts import TextIndexOptions, TextIndexSummary
from indexers.texts import index_texts as run_texts
from indexers.video_decode import SamplingPlan, import_av
from indexers.videos import VideoIndexOptions, VideoIndexSummary
from indexers.videos import index_videos as run_videos
from retrieval.index.directory import NO_MODEL, Index, open_index
from retrieval.index.directory import create_index as create_directory
from retrieval.index.opening import DEFAULT_BACKEND
from retrieval.index.query_cache import read_query_file, remember_queries
from retrieval.io.shards import ShardDiscovery
from retrieval.io.sources import VIDEO_EXTENSIONS, Discovery, discover

__all__ = ["EmbeddingSummary", "ImageIndexOptions", "Index", "IndexSummary", "TextIndexOptions", "TextIndexSummary",
           "VideoIndexOptions", "VideoIndexSummary", "create_index", "index_embeddings", "index_images",
           "index_texts", "index_videos", "open_index"]


def create_index(path: PathLike, model: str | None = None, *, dim: int | None = None,
                 backend: str = DEFAULT_BACKEND, exist_ok: bool = True) -> Index:
    """Create an index directory for ``model`` and return it open for writing (close it, or use ``with``).

    ``model``: a model spec (default ``ViT-B-32:laion2b_s34b_b79k``; ``"clipdex-tiny"`` is shipped), whose vector
    size is found by loading it, or ``"none"`` with ``dim`` for vectors of your own. ``backend``: ``"lance"`` or
    ``"faiss"``. An existing index at ``path`` is opened instead when ``exist_ok`` and it was built with the same
    model and backend (else ``ModelMismatch`` / ``IndexExists``).
    """
    return create_directory(path, dim=dim, model=model, backend=backend, exist_ok=exist_ok)


def index_images(index: Index | PathLike, sources: Sources | Discovery | ShardDiscovery,
                 options: ImageIndexOptions | None = None, *, exclude: Sequence[str] = (), model: str | None = None,
                 device: str | None = None, on_progress: OnProgress | None = None, **changes: Any) -> IndexSummary:
    """Bring the ``images`` table up to date with image files, folders (recursive; hidden ones skipped),
    manifests (CSV/Parquet/JSONL with a ``path`` column and optional ``caption``, ``label`` and other columns) or
    webdataset shards (``.tar`` files, brace patterns, img2dataset folders): ``clipdex index images``.

    Only new and changed files are embedded; bad files become rows of the ``errors`` table. ``exclude``: globs of
    names to skip; ``changes``: fields of :class:`ImageIndexOptions` (``batch_size``, ``workers`` (0: decode in
    this process), ``prune``, ``retry_errors``, ``commit_rows``, ...). ``model``: the model a new index is built
    with (an existing one must have been built with it); ``device``: where the encoder runs (cuda, cpu).
    Returns an :class:`IndexSummary` (added, reused, unchanged, updated, removed, errors, ...; shard runs add
    shard counts).
    """
    check_index(index)
    opts = with_changes(ImageIndexOptions, options, changes)
    found = sources if isinstance(sources, (Discovery, ShardDiscovery)) else (
        discover_image_sources(path_list(sources), exclude, opts.prune))
    with writable(index, model, device) as ix:
        return index_image_sources(ix, found, opts, on_progress)


def index_videos(index: Index | PathLike, sources: Sources | Discovery, options: VideoIndexOptions | None = None, *,
                 fps: float | None = None, frames: int | None = None, keyframes: bool = False,
                 exclude: Sequence[str] = (), model: str | None = None, device: str | None = None,
                 on_progress: OnProgress | None = None, **changes: Any) -> VideoIndexSummary:
    """Bring the ``frames`` and ``videos`` tables up to date with video files (mp4, mov, mkv, webm, avi, m4v),
    folders or manifests: ``clipdex index videos`` (the ``video`` extra: PyAV).

    Sampling: ``fps`` frames a second (default 1), ``frames`` (N frames, the middle of N equal chunks) or
    ``keyframes``, at most one of them. ``changes``: fields of :class:`VideoIndexOptions` (``batch_size``,
    ``workers``, ``prune``, ``retry_errors``, ...). Returns a :class:`VideoIndexSummary` (added, updated,
    unchanged, removed, errors, partial, frames, ...).
    """
    check_index(index)
    if fps is not None or frames is not None or keyframes:
        changes["sampling"] = SamplingPlan.from_options(fps, frames, keyframes)
    opts = with_changes(VideoIndexOptions, options, changes)
    import_av()  # without the video extra, say so before anything is read
    found = sources if isinstance(sources, Discovery) else discover(path_list(sources), VIDEO_EXTENSIONS, exclude)
    with writable(index, model, device) as ix:
        return run_videos(ix, found, opts, on_progress)


def index_texts(index: Index | PathLike, sources: Sources | TextDiscovery, options: TextIndexOptions | None = None,
                *, exclude: Sequence[str] = (), model: str | None = None, device: str | None = None,
                on_progress: OnProgress | None = None, **changes: Any) -> TextIndexSummary:
    """Bring the ``texts`` table up to date with text files (.txt, .md) and tables (JSONL, CSV, Parquet):
    ``clipdex index texts``.

    ``changes``: fields of :class:`TextIndexOptions`: ``split`` (documents: ``"none"``, ``"paragraphs"``,
    ``"lines"``), ``text_column`` (tables; default ``"text"``, the other columns are kept), ``long_text`` (past
    the 77-token context: ``"chunk"``, ``"longclip"`` or ``"truncate"``), ``batch_size``, ``prune``, ...
    Identical texts are embedded once. Returns a :class:`TextIndexSummary` (files, rows, encoded, reused, long,
    chunked, truncated, errors, ...).
    """
    check_index(index)
    opts = with_changes(TextIndexOptions, options, changes)
    found = sources if isinstance(sources, TextDiscovery) else discover_texts(path_list(sources), opts.text_column,
                                                                              exclude)
    with writable(index, model, device) as ix:
        return run_texts(ix, found, opts, on_progress)


def index_embeddings(index: Index | PathLike, source: PathLike, *, model: str = NO_MODEL, column: str | None = None,
                     queries: PathLike | None = None, on_progress: OnProgress | None = None) -> EmbeddingSummary:
    """Add vectors you computed into the ``images`` table: ``clipdex index embeddings``.

    ``source``: clip-retrieval's output folder (``img_emb/``, optional ``text_emb/`` and ``metadata/``), a folder
    of ``.npy`` files (each with an optional ``.parquet`` of metadata) or Parquet files with a vector ``column``.
    ``model``: the model that made them (``"none"``: unknown, no text queries); it must be the index's. A new index
    (``index`` a path) takes the vectors' dimension. ``queries``: a ``.npy`` file of query vectors (q, d) to
    tune the ANN index on (kept in the index's cache). Bad vectors become ``errors`` rows; a killed run resumes
    where it stopped. Returns an :class:`EmbeddingSummary` (files, added, errors, ...).
    """
    check_index(index)
    parts = discover_embeddings(source, column)
    xq = read_query_file(queries, parts[0].dim) if queries is not None else None
    with writable(index, model, None, dim=parts[0].dim) as ix:
        if xq is not None:
            remember_queries(ix.path, xq, "given")
        return run_embeddings(ix, parts, model=model, on_progress=on_progress)

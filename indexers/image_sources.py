"""What the image indexer reads, and which indexer reads it: image files, folders and manifests (``index_images``)
or webdataset shards (``index_shards``), one kind per run. ``clipdex index images`` and ``clipdex.index_images``
both go through here, so they accept and refuse the same sources.

    found = discover_image_sources(["./photos", "pairs.csv"])        # a Discovery (checked before any index opens)
    found = discover_image_sources(["shards/{00000..00009}.tar"])    # a ShardDiscovery
    summary = index_image_sources(index, found, ImageIndexOptions())
"""
from __future__ import annotations

from typing import Callable, Sequence

from indexers.images import ImageIndexOptions, IndexSummary, index_images
from indexers.shards import index_shards
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index
from retrieval.io.shards import ShardDiscovery, discover_shards, is_shard_source
from retrieval.io.sources import IMAGE_EXTENSIONS, Discovery, discover
from retrieval.io.workers import Progress


def discover_image_sources(sources: Sequence[str], exclude: Sequence[str] = (),
                           prune: bool = False) -> Discovery | ShardDiscovery:
    """The images named by ``sources``: image files, folders (recursive) and manifests, or else webdataset shards
    (``.tar`` files, brace patterns, folders of tars). ``InvalidInput`` for a missing or empty source, for shards
    mixed with other sources, and for ``exclude`` or ``prune`` with shards (they apply to files and folders)."""
    shards = [s for s in sources if is_shard_source(s)]
    if shards and len(shards) != len(sources):
        raise InvalidInput("give shard sources (.tar, brace patterns, folders of shards) and image folders or "
                           "manifests in separate runs")
    if shards and (prune or exclude):
        raise InvalidInput("--prune and --exclude do not apply to shard sources")
    return discover_shards(sources) if shards else discover(sources, IMAGE_EXTENSIONS, exclude)


def index_image_sources(index: Index, found: Discovery | ShardDiscovery, options: ImageIndexOptions | None = None,
                        on_progress: Callable[[Progress], None] | None = None) -> IndexSummary:
    """Run the indexer ``found`` calls for (shards: ``index_shards``, whose summary adds shard counts; else
    ``index_images``) on this process and its decoding workers."""
    run = index_shards if isinstance(found, ShardDiscovery) else index_images
    return run(index, found, options, on_progress)

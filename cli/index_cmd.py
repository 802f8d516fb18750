"""``clipdex index images SRC... --index DIR``: build or update an index from image files and manifests."""
from __future__ import annotations

import click

from indexers.images import ImageIndexOptions, index_images
from retrieval.index.opening import open_for_writing
from retrieval.io.sources import IMAGE_EXTENSIONS, discover

from cli.indexing import indexing_options, run_indexer


def summary_line(s: dict) -> str:
    parts = [f"added {s['added']}", f"updated {s['updated']}", f"reused {s['reused']}",
             f"unchanged {s['unchanged']}", f"removed {s['removed']}",
             f"errors {s['errors']}" + (f" (+{s['known_errors']} known)" if s["known_errors"] else "")]
    line = ", ".join(parts) + f" in {s['elapsed']:.1f}s ({s['images_per_s']:.1f} images/s)"
    if s.get("long_captions"):
        line += f"; {s['long_captions']} captions longer than the context were chunk-pooled"
    return line


@click.command("images")
@indexing_options(workers=True)
@click.option("--commit-every", default=2048, show_default=True, type=click.IntRange(1),
              help="Rows per commit: a crash loses at most this many.")
def images(sources, index_path, model, backend, batch_size, workers, exclude, prune, retry_errors, device, as_json,
           commit_every):
    """Index image folders or manifests (CSV/Parquet/JSONL with path, caption, label columns)."""
    found = discover(sources, IMAGE_EXTENSIONS, exclude)  # bad sources fail before the index is touched
    ix = open_for_writing(index_path, model, backend, device=device)
    opts = ImageIndexOptions(batch_size=batch_size, workers=workers, prune=prune, retry_errors=retry_errors,
                             commit_rows=commit_every)
    run_indexer(ix, "img", lambda progress: index_images(ix, found, opts, progress).as_dict(), as_json,
                summary_line)

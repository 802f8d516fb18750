"""``clipdex index images SRC... --index DIR``: build or update an index from files."""
from __future__ import annotations

from pathlib import Path

import click

from retrieval.index.directory import MANIFEST, create_index, open_index

from cli.options import device_option, json_option
from cli.output import print_json, progress_bar


@click.group()
def index() -> None:
    """Build or update an index (images; videos and texts come with their indexers)."""


def open_for_writing(path: str, model: str | None, backend: str, device: str | None):
    """Open the index at ``path`` for writing, creating it when absent (the model defaults to the manifest's)."""
    from retrieval.encode.encoder import load_encoder

    if (Path(path) / MANIFEST).is_file():
        ix = open_index(path, writable=True)
        if model is not None:
            try:
                ix.check_model(model)
            except Exception:
                ix.close()
                raise
        if backend is not None and backend != ix.backend:
            ix.close()
            from retrieval.errors import IndexExists

            raise IndexExists(f"{path} uses the {ix.backend} backend, not {backend}")
    else:
        enc = load_encoder(model, device=device)
        ix = create_index(path, dim=enc.dim, model=str(enc.spec), backend=backend or "lance")
    if device is not None:
        ix.encoder(device=device)
    return ix


def run_indexer(ix, desc: str, unit: str, run, as_json: bool, line) -> None:
    """Run ``run(on_progress) -> summary dict`` with a progress bar on stderr, close the index whatever happens,
    then print the summary (``line(summary)`` for people, JSON with ``--json``)."""
    bar = progress_bar(0, desc, unit)

    def on_progress(p):
        bar.total = p.total
        bar.n = p.done
        bar.set_postfix(p.counts, refresh=False)
        bar.refresh()

    try:
        summary = run(on_progress)
    finally:
        bar.close()
        ix.close()
    if as_json:
        print_json(summary)
    else:
        click.echo(line(summary))


def _summary_line(s: dict) -> str:
    parts = [f"added {s['added']}", f"updated {s['updated']}", f"reused {s['reused']}",
             f"unchanged {s['unchanged']}", f"removed {s['removed']}",
             f"errors {s['errors']}" + (f" (+{s['known_errors']} known)" if s["known_errors"] else "")]
    line = ", ".join(parts) + f" in {s['elapsed']:.1f}s ({s['images_per_s']:.1f} images/s)"
    if s.get("long_captions"):
        line += f"; {s['long_captions']} captions longer than the context were chunk-pooled"
    return line


@index.command()
@click.argument("sources", nargs=-1, required=True, metavar="SRC...")
@click.option("--index", "index_path", required=True, help="Index directory (created when absent).")
@click.option("--model", default=None, help="Model spec for a new index (default ViT-B-32:laion2b_s34b_b79k).")
@click.option("--backend", type=click.Choice(["lance", "faiss"]), default=None, help="Store for a new index (lance).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("--workers", default=None, type=click.IntRange(0, 64), help="Decoding processes (default: spare cores).")
@click.option("--exclude", multiple=True, help="Glob of file or folder names to skip (repeatable).")
@click.option("--prune", is_flag=True, help="Remove rows of files that are gone from the sources.")
@click.option("--retry-errors", is_flag=True, help="Try files recorded as bad again even if unchanged.")
@click.option("--commit-every", default=2048, show_default=True, type=click.IntRange(1),
              help="Rows per commit: a crash loses at most this many.")
@device_option
@json_option
def images(sources, index_path, model, backend, batch_size, workers, exclude, prune, retry_errors, commit_every,
           device, as_json):
    """Index image folders or manifests (CSV/Parquet/JSONL with path, caption, label columns)."""
    from indexers.images import ImageIndexOptions, index_images
    from retrieval.io.sources import IMAGE_EXTENSIONS, discover

    found = discover(sources, IMAGE_EXTENSIONS, exclude)  # bad sources fail before the index is touched
    ix = open_for_writing(index_path, model, backend, device)
    opts = ImageIndexOptions(batch_size=batch_size, workers=workers, prune=prune, retry_errors=retry_errors,
                             commit_rows=commit_every)
    run_indexer(ix, "images", "img", lambda progress: index_images(ix, found, opts, progress).as_dict(), as_json,
                _summary_line)


from cli.text_cmds import texts as _texts  # noqa: E402  (clipdex index texts)

index.add_command(_texts)

"""``clipdex index texts SRC... --index DIR``: index text files (.txt, .md) and tables (JSONL, CSV, Parquet)."""
from __future__ import annotations

from pathlib import Path

import click

from cli.options import device_option, json_option


def summary_line(s: dict) -> str:
    """The run in one line, long texts included: what was pooled, stretched or truncated is always said."""
    errors = f"errors {s['errors']}" + (f" (+{s['known_errors']} known)" if s["known_errors"] else "")
    head = (f"texts: {s['files']} files read ({s['unchanged']} unchanged), {s['rows']} rows, {s['encoded']} encoded, "
            f"{s['reused']} reused, {s['replaced']} replaced, {s['removed']} removed, {errors}")
    long = (f"long texts ({s['long_text']}): {s['long']} over 75 tokens, {s['chunked']} chunked, "
            f"{s['stretched']} stretched, {s['truncated']} truncated")
    return f"{head}; {long}; in {s['elapsed']:.1f}s ({s['texts_per_s']:.1f} texts/s)"


def _check_existing(path: str, long_text: str) -> None:
    """Refuse, before opening the index for writing, a strategy other than the one its texts table was built with."""
    from retrieval.errors import InvalidInput
    from retrieval.index.directory import MANIFEST, open_index

    if not (Path(path) / MANIFEST).is_file():
        return
    ix = open_index(path)
    try:
        info = ix.manifest.get("tables", {}).get("texts") or {}
        built = info.get("long_text")
        if built and built != long_text and info.get("rows"):
            raise InvalidInput(f"the texts table of {path} was built with --long-text {built}; index with "
                               f"--long-text {built} or into a new index")
    finally:
        ix.close()


@click.command()
@click.argument("sources", nargs=-1, required=True, metavar="SRC...")
@click.option("--index", "index_path", required=True, help="Index directory (created when absent).")
@click.option("--model", default=None, help="Model spec for a new index (default ViT-B-32:laion2b_s34b_b79k).")
@click.option("--backend", type=click.Choice(["lance", "faiss"]), default=None, help="Store for a new index (lance).")
@click.option("--long-text", "long_text", default="chunk", show_default=True,
              help="Texts past the context: chunk (pool windows), longclip (stretch to 248), truncate (counted).")
@click.option("--split", default="none", show_default=True, help=".txt/.md files: none, paragraphs or lines.")
@click.option("--text-column", default="text", show_default=True, help="JSONL/CSV/Parquet column holding the text.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("--exclude", multiple=True, help="Glob of file or folder names to skip (repeatable).")
@click.option("--prune", is_flag=True, help="Remove rows of files that are gone from the sources.")
@click.option("--retry-errors", is_flag=True, help="Read files recorded as bad again even if unchanged.")
@device_option
@json_option
def texts(sources, index_path, model, backend, long_text, split, text_column, batch_size, exclude, prune,
          retry_errors, device, as_json):
    """Index text files (one text each, or per paragraph / line) and JSONL/CSV/Parquet tables (one per row)."""
    from indexers.text_sources import SPLITS, discover_texts
    from indexers.texts import TextIndexOptions, index_texts
    from retrieval.errors import InvalidInput
    from retrieval.encode.text import check_strategy

    from cli.index_cmd import open_for_writing, run_indexer

    check_strategy(long_text)
    if split not in SPLITS:
        raise InvalidInput(f"unknown --split {split!r}; choose one of {', '.join(SPLITS)}")
    found = discover_texts(sources, text_column, exclude)  # bad sources fail before the index is touched
    _check_existing(index_path, long_text)
    ix = open_for_writing(index_path, model, backend, device)
    opts = TextIndexOptions(long_text=long_text, split=split, text_column=text_column, batch_size=batch_size,
                            prune=prune, retry_errors=retry_errors)
    run_indexer(ix, "texts", "file", lambda progress: index_texts(ix, found, opts, progress).as_dict(), as_json,
                summary_line)

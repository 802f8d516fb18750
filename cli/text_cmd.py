"""``clipdex index texts SRC... --index DIR``: index text files (.txt, .md) and tables (JSONL, CSV, Parquet)."""
from __future__ import annotations

import click

from cli.indexing import engine_options, indexing_options, run_indexer
from indexers.text_sources import SPLITS, discover_texts
from indexers.texts import TextIndexOptions, index_texts
from retrieval.encode.text import check_strategy
from retrieval.errors import InvalidInput
from retrieval.index.opening import open_for_writing


def summary_line(s: dict) -> str:
    """The run in one line, long texts included: what was pooled, stretched or truncated is always said."""
    errors = f"errors {s['errors']}" + (f" (+{s['known_errors']} known)" if s["known_errors"] else "")
    head = (f"texts: {s['files']} files read ({s['unchanged']} unchanged), {s['rows']} rows, {s['encoded']} encoded, "
            f"{s['reused']} reused, {s['replaced']} replaced, {s['removed']} removed, {errors}")
    long = (f"long texts ({s['long_text']}): {s['long']} over 75 tokens, {s['chunked']} chunked, "
            f"{s['stretched']} stretched, {s['truncated']} truncated")
    return f"{head}; {long}; in {s['elapsed']:.1f}s ({s['texts_per_s']:.1f} texts/s)"


@click.command("texts")
@indexing_options(workers=False)
@click.option("--long-text", "long_text", default="chunk", show_default=True,
              help="Texts past the context: chunk (pool windows), longclip (stretch to 248), truncate (counted).")
@click.option("--split", default="none", show_default=True, help=".txt/.md files: none, paragraphs or lines.")
@click.option("--text-column", default="text", show_default=True, help="JSONL/CSV/Parquet column holding the text.")
@engine_options
def texts(sources, index_path, model, backend, batch_size, exclude, prune, retry_errors, device, as_json, long_text,
          split, text_column, engine, ray_address, actors, gpus_per_actor):
    """Index text files (one text each, or per paragraph / line) and JSONL/CSV/Parquet tables (one per row)."""
    check_strategy(long_text)
    if split not in SPLITS:
        raise InvalidInput(f"unknown --split {split!r}; choose one of {', '.join(SPLITS)}")
    found = discover_texts(sources, text_column, exclude)  # bad sources fail before the index is touched
    ix = open_for_writing(index_path, model, backend, device=device)
    opts = TextIndexOptions(long_text=long_text, split=split, text_column=text_column, batch_size=batch_size,
                            prune=prune, retry_errors=retry_errors)
    if engine == "ray":
        from indexers.ray_engine import RayOptions  # deferred: Ray is an optional extra
        from indexers.ray_texts import index_texts_ray  # deferred: Ray is an optional extra

        ropts = RayOptions(address=ray_address, actors=actors, gpus_per_actor=gpus_per_actor)
        run_indexer(ix, "file", lambda progress: index_texts_ray(ix, found, opts, ropts, progress).as_dict(), as_json,
                    summary_line)
        return
    run_indexer(ix, "file", lambda progress: index_texts(ix, found, opts, progress).as_dict(), as_json, summary_line)

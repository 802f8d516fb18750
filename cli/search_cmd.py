"""``clipdex search INDEX "text"`` / ``--image PATH`` / ``--vectors Q.npy``: top-k rows with scores and metadata."""
from __future__ import annotations

import click
import numpy as np
import pyarrow as pa

from cli.hybrid_options import for_people, hybrid_options, run_hybrid, wants_hybrid
from cli.options import device_option, json_option, min_score_option, top_k_option
from cli.output import print_json_lines, print_table
from cli.video_cmd import run_video_search, video_search_options
from retrieval.errors import InvalidInput
from retrieval.index.directory import open_index
from retrieval.index.query_cache import read_vectors_file
from retrieval.query.hybrid import DEFAULT_FUSION
from retrieval.query.search import search as run_search
from retrieval.query.search import text_query_encoder


@click.command()
@click.argument("index_path", metavar="INDEX")
@click.argument("text", nargs=-1)
@click.option("--image", "image", type=click.Path(dir_okay=False), help="Query with an image file instead of text.")
@click.option("--vectors", "vectors", type=click.Path(dir_okay=False), default=None,
              help="Query with a float32 (q, d) .npy array, one query per row (JSON lines carry `query`).")
@top_k_option(10)
@click.option("--where", default=None, help="SQL filter on the rows' columns, e.g. \"label = 'cat' AND width > 500\".")
@min_score_option
@click.option("--table", default="images", show_default=True, help="Table to search.")
@click.option("--model", default=None, help="Model to query with (must be the index's; default: the manifest's).")
@click.option("--long-text", "long_text", default=None,
              help="Text queries past the context: chunk, longclip or truncate (default: the table's own).")
@hybrid_options
@video_search_options
@device_option
@json_option
def search(index_path, text, image, vectors, k, where, min_score, table, model, long_text, device, as_json, mode,
           weights, fusion, explain, add, subtract, **video):
    """Search an index with a text, an image or a batch of vectors; by what the pictures show, the words they
    carry (--mode), or both. Query arithmetic: beach + sunset:0.5 - people."""
    parts, text = text, (" ".join(text) if text else None)
    if vectors is not None:
        if mode in ("text", "hybrid") or explain or add or subtract:
            raise InvalidInput("--vectors searches by vector only (no --mode text/hybrid, --explain, --add)")
        if text is not None or image is not None:
            raise InvalidInput("give a text query, --image PATH or --vectors FILE (one of them)")
        result = search_vectors_file(index_path, vectors, k, where, min_score, table)
    else:
        if (text is None) == (image is None):
            raise InvalidInput("give a text query or --image PATH (one of them)")
        with open_index(index_path) as ix:
            if model is not None:
                ix.check_model(model)
            videos = table in ("videos", "frames") or any(v not in (None, False) for v in video.values())
            tuned = weights is not None or fusion != DEFAULT_FUSION
            hybrid = wants_hybrid(ix, parts, mode, explain, add, subtract, tuned)
            if videos and hybrid and (mode != "auto" or explain or add or subtract or len(parts) > 1):
                raise InvalidInput("--mode, --explain and query arithmetic search the images and texts tables")
            if text is not None:  # a text query may run on the exported text tower, without importing torch
                encoder = text_query_encoder(ix, device, long_text, "videos" if videos and table != "frames" else table)
            else:
                encoder = ix.encoder(device=device)
            if hybrid and not videos:
                result = run_hybrid(ix, parts, image, k, table, where, min_score, encoder, long_text, mode, weights,
                                    fusion, explain, add, subtract)
            elif videos:
                result = run_video_search(ix, text, image, k, where, min_score, encoder, table, long_text, video)
            else:
                result = run_search(ix, text, image=image, k=k, table=table, where=where, min_score=min_score,
                                    encoder=encoder, long_text=long_text)
        notes = result.schema.metadata or {}
        if notes.get(b"query_long") == b"True":  # a long query: say what was done with it
            click.echo(f"query: {notes[b'query_note'].decode()}", err=True)
    if as_json:
        print_json_lines(result)
    else:
        print_table(for_people(result))


def search_vectors_file(index_path: str, path: str, k: int, where, min_score, table: str) -> pa.Table:
    """``clipdex search INDEX --vectors Q.npy``: the (q, d) rows answered as one batch; results carry ``query``."""
    xq = read_vectors_file(path, "--vectors")
    with open_index(index_path) as ix:
        result = run_search(ix, vectors=xq, k=k, table=table, where=where, min_score=min_score)
    if "query" not in result.column_names:  # a single row: the library leaves the column out
        result = result.add_column(0, "query", pa.array(np.zeros(len(result), np.int32)))
    return result

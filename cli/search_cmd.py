"""``clipdex search INDEX "text"`` / ``--image PATH``: top-k rows with scores and metadata."""
from __future__ import annotations

import click

from retrieval.index.directory import open_index
from retrieval.search.query import search as run_search

from cli.options import device_option, json_option
from cli.output import print_json_lines, print_table
from cli.video_cmds import run_video_search, video_search_options


@click.command()
@click.argument("index_path", metavar="INDEX")
@click.argument("text", required=False)
@click.option("--image", "image", type=click.Path(dir_okay=False), help="Query with an image file instead of text.")
@click.option("--vectors", "vectors", type=click.Path(dir_okay=False), default=None,
              help="Query with a float32 (q, d) .npy array, one query per row (JSON lines carry `query`).")
@click.option("-k", "--top-k", "k", default=10, show_default=True, type=click.IntRange(1, 10000))
@click.option("--where", default=None, help="SQL filter on the rows' columns, e.g. \"label = 'cat' AND width > 500\".")
@click.option("--min-score", type=float, default=None, help="Drop hits scoring below this cosine.")
@click.option("--table", default="images", show_default=True, help="Table to search.")
@click.option("--model", default=None, help="Model to query with (must be the index's; default: the manifest's).")
@click.option("--long-text", "long_text", default=None,
              help="Text queries past the context: chunk, longclip or truncate (default: the table's own).")
@video_search_options
@device_option
@json_option
def search(index_path, text, image, vectors, k, where, min_score, table, model, long_text, device, as_json, **video):
    """Search an index with a text, an image or a batch of vectors."""
    from retrieval.errors import InvalidInput

    if vectors is not None:
        from cli.scale_cmds import search_vectors_file

        if text is not None or image is not None:
            raise InvalidInput("give a text query, --image PATH or --vectors FILE (one of them)")
        result = search_vectors_file(index_path, vectors, k, where, min_score, table)
        print_json_lines(result) if as_json else print_table(result)
        return
    if (text is None) == (image is None):
        raise InvalidInput("give a text query or --image PATH (one of them)")
    ix = open_index(index_path)
    if model is not None:
        ix.check_model(model)
    encoder = ix.encoder(device=device)
    if table in ("videos", "frames") or any(v not in (None, False) for v in video.values()):
        result = run_video_search(ix, text, image, k, where, min_score, encoder, table, long_text, video)
    else:
        result = run_search(ix, text, image=image, k=k, table=table, where=where, min_score=min_score, encoder=encoder,
                            long_text=long_text)
    ix.close()
    notes = result.schema.metadata or {}
    if notes.get(b"query_long") == b"True":  # a long query: say what was done with it
        click.echo(f"query: {notes[b'query_note'].decode()}", err=True)
    if as_json:
        print_json_lines(result)
    else:
        print_table(result)

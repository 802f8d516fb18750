"""What ``clipdex index images``, ``index texts`` and ``index videos`` share: their option block and the run
(progress on stderr, the index closed whatever happens, the summary on stdout)."""
from __future__ import annotations

from typing import Callable

import click

from cli.options import device_option, json_option
from cli.output import ProgressBars, print_json
from retrieval.index.directory import Index
from retrieval.io.workers import Progress


def indexing_options(workers: bool):
    """The options every indexing command takes (SRC..., --index, --model, --backend, --batch-size, --exclude,
    --prune, --retry-errors, --device, --json; ``workers``: also --workers). Command-specific options go
    between this decorator and the function."""
    opts = [
        click.argument("sources", nargs=-1, required=True, metavar="SRC..."),
        click.option("--index", "index_path", required=True, help="Index directory (created when absent)."),
        click.option("--model", default=None, help="Model spec for a new index (default ViT-B-32:laion2b_s34b_b79k)."),
        click.option("--backend", type=click.Choice(["lance", "faiss"]), default=None,
                     help="Store for a new index (lance)."),
        click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 4096),
                     help="Images, frames or texts per forward pass."),
        *([click.option("--workers", default=None, type=click.IntRange(0, 64),
                        help="Decoding processes (default: spare cores).")] if workers else []),
        click.option("--exclude", multiple=True, help="Glob of file or folder names to skip (repeatable)."),
        click.option("--prune", is_flag=True, help="Remove rows of files that are gone from the sources."),
        click.option("--retry-errors", is_flag=True,
                     help="Read files recorded as bad (or partial) again even if unchanged."),
        device_option,
        json_option,
    ]

    def decorate(fn):
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return decorate


def engine_options(fn):
    """``--engine local|ray`` and the Ray engine's options (``index images`` over shards, ``index texts``,
    ``index videos``)."""
    opts = [
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="local: this process and its decoding workers; ray: Ray Data tasks and an actor pool "
                          "(the [ray] extra)."),
        click.option("--ray-address", default=None, help="Ray cluster to join (default: a local Ray)."),
        click.option("--actors", default=None, type=click.IntRange(1, 4096),
                     help="Embedding actors for --engine ray (default: one per GPU, else 1)."),
        click.option("--gpus-per-actor", default=0.0, show_default=True, type=click.FloatRange(0, 16),
                     help="GPUs each embedding actor asks Ray for."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def run_indexer(ix: Index, unit: str, run: Callable[[Callable[[Progress], None]], dict], as_json: bool,
                line: Callable[[dict], str]) -> None:
    """Run ``run(on_progress) -> summary dict`` with progress bars on stderr, close the index whatever happens,
    then print the summary (``line(summary)`` for people, one JSON line with ``--json``)."""
    with ProgressBars(unit) as bars:
        try:
            summary = run(bars)
        finally:
            ix.close()
    if as_json:
        print_json(summary)
    else:
        click.echo(line(summary))

"""``clipdex eval retrieval INDEX QUERIES`` and ``clipdex eval classify SOURCE --classes classes.txt``: how well a
model finds and classifies, on any data with known answers (CLIP_benchmark-style)."""
from __future__ import annotations

import click

from cli.classify_cmd import _print_summary, method_options
from cli.options import device_option, json_option
from cli.output import ProgressBars, print_json
from retrieval.classify.evaluate import evaluate_classification
from retrieval.classify.inputs import read_classes
from retrieval.classify.prepare import ClassifyOptions
from retrieval.encode.text import query_strategy
from retrieval.index.directory import open_index
from retrieval.query.evaluate import evaluate_retrieval, read_queries


@click.group("eval")
def eval_group() -> None:
    """Measure retrieval (recall@k, MRR, nDCG@10) or classification (top-1/top-5) on labelled data."""


@eval_group.command("retrieval")
@click.argument("index_path", metavar="INDEX")
@click.argument("queries_path", metavar="QUERIES", type=click.Path(dir_okay=False))
@click.option("--table", default="images", show_default=True, help="Table to search.")
@click.option("--depth", default=100, show_default=True, type=click.IntRange(10, 10_000),
              help="Results per query searched (MRR counts a first relevant item up to this rank).")
@click.option("--long-text", default=None, help="Long text queries: chunk, longclip or truncate (default: the "
                                                "table's own).")
@device_option
@json_option
def retrieval_cmd(index_path, queries_path, table, depth, long_text, device, as_json):
    """Score the ranking of every query in a JSONL/CSV file (query or image, relevant) or COCO captions JSON."""
    queries = read_queries(queries_path)
    with open_index(index_path) as ix, ProgressBars("query") as bars:
        encoder = ix.encoder(device=device)
        result = evaluate_retrieval(ix, queries, table, depth, encoder, query_strategy(ix.manifest, table, long_text),
                                    on_progress=bars)
    s = result["summary"]
    if as_json:
        for row in result["queries"]:
            print_json(row)
        print_json({"summary": s})
        return
    click.echo(f"{s['queries']} queries against {table} of {index_path}")
    for name in ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10"):
        click.echo(f"  {name:<10} {s[name]:.4f}")


@eval_group.command("classify")
@click.argument("source", metavar="SOURCE")
@method_options
@click.option("--templates", default="openai80", show_default=True, help="openai80, simple7, single or a file.")
@click.option("--model", default=None, help="Model spec (default: the support index's model, else the default).")
@click.option("--per-class", default=100, show_default=True, type=click.IntRange(1), help="SuS-LC images per class.")
@device_option
@json_option
def classify_cmd(source, classes_path, methods, support, shots, templates, model, per_class, device, as_json):
    """Top-1/top-5 accuracy per method on SOURCE: a folder per class, or a manifest with path and label."""
    opts = ClassifyOptions(methods=methods, templates=templates, support=support, shots=shots, per_class=per_class)
    with ProgressBars("img") as bars:
        result = evaluate_classification(source, read_classes(classes_path), opts, model, device, bars)
    if as_json:
        print_json({"summary": result})
    else:
        _print_summary(result["accuracy"], result["images"])

"""``clipdex eval retrieval INDEX QUERIES`` and ``clipdex eval classify SOURCE --classes classes.txt``: how well a
model finds and classifies, on any data with known answers (CLIP_benchmark-style)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from cli.classify_cmd import _print_summary, method_options
from cli.hybrid_options import parse_weights
from cli.options import device_option, json_option
from cli.output import ProgressBars, print_json
from retrieval.classify.evaluate import evaluate_classification
from retrieval.classify.inputs import read_classes
from retrieval.classify.prepare import ClassifyOptions
from retrieval.encode.text import query_strategy
from retrieval.index.directory import open_index
from retrieval.query.evaluate import clip_benchmark_record, evaluate_retrieval, read_queries
from retrieval.query.hybrid import DEFAULT_FUSION, FUSIONS, MODES, HybridOptions


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
@click.option("--mode", type=click.Choice(MODES), default="vector", show_default=True,
              help="Rank text queries by vector, by keywords (text), or both fused (hybrid; auto as search does).")
@click.option("--weights", default=None, metavar="V,T", help="Hybrid mode: vector and keyword weights (1,1).")
@click.option("--fusion", type=click.Choice(FUSIONS), default=DEFAULT_FUSION, show_default=True,
              help="Hybrid fusion (see clipdex search --help).")
@click.option("--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Also write the summary as CLIP_benchmark's result JSON (zeroshot_retrieval) to this file.")
@click.option("--dataset", default=None, help="The dataset name in --output (default: the query file's name).")
@device_option
@json_option
def retrieval_cmd(index_path, queries_path, table, depth, long_text, device, as_json, mode, weights, fusion, output,
                  dataset):
    """Score the ranking of every query in a JSONL/CSV file (query or image, relevant; optional kind) or COCO
    captions JSON."""
    queries = read_queries(queries_path)
    options = HybridOptions(mode=mode, weights=parse_weights(weights), fusion=fusion)
    options.check()
    with open_index(index_path) as ix, ProgressBars("query") as bars:
        encoder = ix.encoder(device=device)
        result = evaluate_retrieval(ix, queries, table, depth, encoder, query_strategy(ix.manifest, table, long_text),
                                    on_progress=bars, options=options)
        model = ix.model
    if output is not None:
        record = clip_benchmark_record(result, model, dataset or Path(queries_path).stem)
        Path(output).write_text(json.dumps(record, indent=2) + "\n")
    s = result["summary"]
    if as_json:
        for row in result["queries"]:
            print_json(row)
        print_json({"summary": s})
        return
    click.echo(f"{s['queries']} queries against {table} of {index_path}")
    for name in ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10"):
        click.echo(f"  {name:<10} {s[name]:.4f}")
    for kind, m in s.get("kinds", {}).items():
        click.echo(f"  {kind}: {m['queries']} queries, recall@1 {m['recall@1']:.4f}, recall@10 {m['recall@10']:.4f}, "
                   f"ndcg@10 {m['ndcg@10']:.4f}")


@eval_group.command("classify")
@click.argument("source", metavar="SOURCE")
@method_options
@click.option("--templates", default="openai80", show_default=True, help="openai80, simple7, single or a file.")
@click.option("--model", default=None, help="Model spec (default: the support index's model, else the default).")
@click.option("--per-class", default=100, show_default=True, type=click.IntRange(1), help="SuS-LC images per class.")
@click.option("--tune", default=None, help="A labelled split (folder per class or manifest) to grid-search on; "
                                           "never the evaluated set.")
@click.option("--fuser", default=None, type=click.Path(dir_okay=False), help="RECO fusers from clipdex train-reco.")
@device_option
@json_option
def classify_cmd(source, classes_path, methods, support, shots, templates, model, per_class, tune, fuser, device,
                 as_json):
    """Top-1/top-5 accuracy per method on SOURCE: a folder per class, or a manifest with path and label."""
    if tune and Path(tune).expanduser().resolve() == Path(source).expanduser().resolve():
        raise click.BadParameter("the tuning split must not be the evaluated set", param_hint="--tune")
    opts = ClassifyOptions(methods=methods, templates=templates, support=support, shots=shots, per_class=per_class,
                           tune=tune, fuser=fuser)
    with ProgressBars("img") as bars:
        result = evaluate_classification(source, read_classes(classes_path), opts, model, device, bars)
    if as_json:
        print_json({"summary": result})
    else:
        _print_summary(result["accuracy"], result["images"])

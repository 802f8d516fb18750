"""Search at scale: ``clipdex optimize INDEX`` (ANN index tuned to a recall target) and
``clipdex index embeddings SRC --index DIR`` (bring your own vectors)."""
from __future__ import annotations

import click

from cli.indexing import run_indexer
from cli.options import json_option
from cli.output import print_json
from indexers.common import IMPORT_MEMORY_KEY
from indexers.embedding_sources import discover_embeddings
from indexers.embeddings import index_embeddings
from retrieval.ann.plan import check_recall, parse_memory
from retrieval.index.directory import open_index
from retrieval.index.opening import open_for_writing
from retrieval.index.optimize import OptimizeOptions, optimize_table
from retrieval.index.query_cache import load_queries, read_query_file, remember_queries

recall_option = click.option("--recall", type=float, default=0.95, show_default=True,
                             help="recall@10 target the search parameters are tuned to, in (0, 1].")
memory_option = click.option("--memory", default=None,
                             help="Memory budget for the index, e.g. 8G (default: half the machine's RAM).")
queries_option = click.option("--queries", "queries_path", default=None, type=click.Path(dir_okay=False),
                              help="Query vectors (.npy, n x d) to tune on, e.g. text embeddings of real queries; "
                                   "kept in the index's cache for later optimize runs.")


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


@click.command()
@click.argument("index_path", metavar="INDEX")
@recall_option
@memory_option
@click.option("--table", default="images", show_default=True)
@click.option("--kind", default=None,
              help="Force an index: faiss flat|hnsw|ivf_flat|ivf_sq8|ivf_pq_fs; "
                   "lance IVF_PQ|IVF_FLAT|IVF_SQ|IVF_HNSW_SQ.")
@click.option("--exact-below", default=100_000, show_default=True, type=click.IntRange(0),
              help="Tables smaller than this are searched exactly.")
@click.option("--rebuild", is_flag=True, help="Rebuild the index even if it is the one there is.")
@click.option("--candidates", "max_candidates", default=5, show_default=True, type=click.IntRange(0),
              help="Index structures measured on a sample before building the fastest (0: choose by rule).")
@click.option("--time-budget", default=600.0, show_default=True, type=click.FloatRange(0),
              help="Seconds to spend measuring candidates (the first is always measured).")
@queries_option
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: the chosen FAISS structure trained here once, filled by Ray tasks (a partition of the "
                   "table each) and merged (the [ray] extra; Lance tables).")
@click.option("--ray-address", default=None, help="Ray cluster to join with --engine ray (default: a local Ray).")
@json_option
def optimize(index_path, recall, memory, table, kind, exact_below, rebuild, max_candidates, time_budget, queries_path,
             engine, ray_address, as_json):
    """Build or re-tune a table's ANN index for a recall target; record the measured recall@10.

    Tuning queries: --queries, else the index's cached queries (given earlier, or sampled by `clipdex serve`),
    else the table's caption vectors (text-like), else its image vectors (image-like: text queries may do worse)."""
    check_recall(recall)
    budget = parse_memory(memory) if memory is not None else None
    ix = open_index(index_path, writable=True)

    def on_plan(plan):
        click.echo(f"plan: {plan.factory} ({plan.reason}); estimated build {plan.build_seconds:.0f}s, "
                   f"memory {_gib(plan.memory_bytes)}", err=True)

    def on_candidate(c):
        click.echo(f"measured {c.plan.factory} on {c.sample_rows} rows: recall@10 {c.recall:.3f} at "
                   f"{c.params}, {c.qps:.0f} QPS", err=True)

    try:
        if queries_path is not None:
            remember_queries(ix.path, read_query_file(queries_path, ix.dim), "given")
        queries, queries_kind = load_queries(ix.path)
        options = OptimizeOptions(recall=recall, memory=budget, kind=kind, exact_below=exact_below, rebuild=rebuild,
                                  select=max_candidates > 0, max_candidates=max(1, max_candidates),
                                  time_budget=time_budget, queries=queries, queries_kind=queries_kind or "given")
        if engine == "ray":
            from indexers.ray_engine import RayOptions  # deferred: Ray is an optional extra
            from indexers.ray_optimize import optimize_table_ray  # deferred: Ray is an optional extra

            record, built = optimize_table_ray(ix, table, options, RayOptions(address=ray_address), on_plan=on_plan,
                                               on_candidate=on_candidate)
            click.echo(built.note or f"built in parallel: {built.tasks} Ray tasks added {built.rows} rows "
                                     f"({built.encode_s:.1f} s of tasks, merged in {built.merge_s:.1f} s)", err=True)
            record = {**record, "parallel": built.as_dict()}
        else:
            record = optimize_table(ix, table, options, on_plan=on_plan, on_candidate=on_candidate)
    finally:
        ix.close()
    if as_json:
        print_json(record)
        return
    params = ", ".join(f"{k}={v}" for k, v in record.get("params", {}).items())
    met = "" if record.get("met", True) else f"  (below the {record.get('target')} target)"
    click.echo(f"{table}: {record.get('factory') or record['kind']}"
               f"{' (' + params + ')' if params else ''}, recall@10 {record.get('recall_at_10')}{met}"
               f" on {record.get('n_queries', 0)} {record.get('query_kind') or ''} queries".rstrip())


@click.command()
@click.argument("source", metavar="SRC")
@click.option("--index", "index_path", required=True, help="Index directory (created when absent).")
@click.option("--model", default="none", show_default=True,
              help="Model that made the vectors (enables text queries), or none; must be an existing index's.")
@click.option("--backend", type=click.Choice(["lance", "faiss"]), default=None, help="Store for a new index (lance).")
@click.option("--column", default=None, help="Vector column of Parquet sources (default: vector, embedding, emb).")
@queries_option
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: a Ray task per source file writes its rows as Lance fragments, committed here "
                   "(the [ray] extra; Lance tables).")
@click.option("--ray-address", default=None, help="Ray cluster to join with --engine ray (default: a local Ray).")
@click.option("--memory", default=None, help="Memory budget of the ANN index an import builds, e.g. 3G, kept for "
              "later imports (default: 3G or half the machine's RAM, the smaller).")
@json_option
def embeddings(source, index_path, model, backend, column, queries_path, engine, ray_address, memory, as_json):
    """Index precomputed embeddings: .npy folders (clip-retrieval's img_emb/ text_emb/ metadata/) or Parquet.

    A table reaching 100,000 rows gets an ANN index chosen by measurement, tuned on --queries, else text_emb/'s
    caption vectors, else image vectors."""
    parts = discover_embeddings(source, column)  # bad sources fail before the index is touched
    queries = read_query_file(queries_path, parts[0].dim) if queries_path is not None else None
    budget = parse_memory(memory) if memory is not None else None  # a bad size fails before the index is touched
    ix = open_for_writing(index_path, model, backend, dim=parts[0].dim)
    if budget is not None:
        ix.manifest[IMPORT_MEMORY_KEY] = budget
        ix.save_manifest()

    def run(on_progress) -> dict:
        if queries is not None:
            remember_queries(ix.path, queries, "given")
        if engine == "ray":
            from indexers.ray_embeddings import index_embeddings_ray  # deferred: Ray is an optional extra
            from indexers.ray_engine import RayOptions  # deferred: Ray is an optional extra

            return index_embeddings_ray(ix, parts, RayOptions(address=ray_address), model=model,
                                        on_progress=on_progress).as_dict()
        return index_embeddings(ix, parts, model=model, on_progress=on_progress).as_dict()

    run_indexer(ix, "vec", run, as_json, _embeddings_line)


def _embeddings_line(s: dict) -> str:
    empty = f", {s['empty_files']} empty" if s["empty_files"] else ""
    return (f"added {s['added']} vectors from {s['files']} files (skipped {s['skipped_files']} already indexed"
            f"{empty}), errors {s['errors']} in {s['elapsed']:.1f}s")

"""``clipdex info INDEX``: manifest, tables, row counts, errors, size on disk."""
from __future__ import annotations

import click

from cli.options import json_option
from cli.output import print_json
from retrieval.index.directory import open_index


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@click.command()
@click.argument("index_path", metavar="INDEX")
@json_option
def info(index_path: str, as_json: bool) -> None:
    """Show what an index holds."""
    with open_index(index_path) as ix:
        data = ix.info()
    if as_json:
        print_json(data)
        return
    click.echo(f"index     {data['path']}")
    click.echo(f"model     {data['model']}  (dim {data['dim']}, {data['metric']})")
    click.echo(f"backend   {data['backend']}  (format {data['format_version']})")
    click.echo(f"created   {data['created']}   updated {data['updated']}")
    click.echo(f"size      {_size(data['size_bytes'])}")
    for name, t in data["tables"].items():
        ann = t["ann"]
        params = ", ".join(f"{k}={v}" for k, v in ann.get("params", {}).items())
        click.echo(f"table     {name}: {t['rows']} rows, search {ann['kind']}{' (' + params + ')' if params else ''}"
                   + (f", recall@10 {ann['recall_at_10']} (target {ann.get('target')}{_stricter(ann)}, "
                      f"{ann.get('n_queries')} {ann.get('query_kind') or ''} queries)" if ann.get("n_queries") else ""))
        if ann.get("engine"):
            click.echo(f"          {ann.get('factory')} ({ann['engine']} index beside the table; "
                       f"{ann.get('pending_rows', 0)} rows added since, searched exactly)")
        if ann.get("memory_bytes") is not None or ann.get("disk_bytes") is not None:
            click.echo(f"          memory {_size(ann.get('memory_bytes', 0))} in RAM"
                       + (f" (budget {_size(ann['memory_budget'])})" if ann.get("memory_budget") else "")
                       + (f", {_size(ann['disk_bytes'])} on disk" if ann.get("disk_bytes") else "")
                       + (f"; refined from {ann['refine']}" if ann.get("refine") else ""))
        if ann.get("reason"):
            click.echo(f"          chosen: {ann['reason']}")
        if ann.get("note"):
            click.echo(f"          {ann['note']}")
        if ann.get("query_kind") == "image":
            click.echo("          recall was measured on image-like queries; text queries (across the modality "
                       "gap) may find less: tune on text with `clipdex optimize --queries TEXT.npy`")
        if _stricter(ann):
            click.echo(f"          the {ann.get('query_kind')} queries stand in for users' ones: tuned to "
                       f"{ann['tuned_to']} so that users' queries keep {ann.get('target')}")
    if data["errors"]:
        click.echo("errors    " + ", ".join(f"{stage}: {n}" for stage, n in sorted(data["errors"].items()))
                   + "  (clipdex search INDEX --table errors ... or read the errors table)")


def _stricter(ann: dict) -> str:
    """", tuned to X" when the tuning aimed above the target (stand-in queries), else ""."""
    goal, target = ann.get("tuned_to"), ann.get("target")
    return f", tuned to {goal}" if goal is not None and target is not None and goal > target else ""

"""``clipdex models``: what can be loaded, and what is in the local cache."""
from __future__ import annotations

import click

from cli.options import json_option
from cli.output import print_json_lines
from retrieval.models.factory import list_known_models


@click.command()
@click.option("--all", "all_tags", is_flag=True, help="List every open_clip pretrained tag, not just cached ones.")
@json_option
def models(all_tags: bool, as_json: bool) -> None:
    """List model specs and whether their weights are cached."""
    rows = list_known_models(all_tags)
    if as_json:
        print_json_lines(rows)
        return
    width = max(len(r["spec"]) for r in rows)
    for r in rows:
        flag = "cached " if r["cached"] else "missing"
        click.echo(f"{r['spec'].ljust(width)}  {flag}  {r['note']}".rstrip())
    click.echo("\nspec forms: ARCH:TAG, ARCH:/path/ckpt.pt, hf-hub:ORG/NAME, /path/to/model-folder, clipdex-tiny",
               err=True)

"""Rendering results: readable tables for people, JSON lines for machines. Only the CLI prints."""
from __future__ import annotations

import json
import math
import sys

import click
import pyarrow as pa

# columns not worth a column in the human table (still in --json)
_QUIET = {"hash", "mtime", "bytes", "width", "height"}


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if math.isfinite(v) else str(v)
    return str(v)


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def print_json_lines(table: pa.Table) -> None:
    for row in table.to_pylist():
        click.echo(json.dumps({k: _jsonable(v) for k, v in row.items()}, ensure_ascii=False))


def print_table(table: pa.Table, max_width: int = 70) -> None:
    """A plain aligned table; long cells are shortened from the left (paths keep their file names)."""
    if len(table) == 0:
        click.echo("no results", err=True)
        return
    cols = [c for c in table.column_names
            if c not in _QUIET and any(v is not None for v in table.column(c).to_pylist())]
    data = [[_fmt(v) for v in table.column(c).to_pylist()] for c in cols]
    data = [[("…" + s[-(max_width - 1):]) if len(s) > max_width else s for s in col] for col in data]
    widths = [max(len(c), *(len(s) for s in col)) for c, col in zip(cols, data)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for r in range(len(table)):
        click.echo("  ".join(data[j][r].ljust(widths[j]) for j in range(len(cols))).rstrip())


def print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=False))


def progress_bar(total: int, desc: str, unit: str):
    """A tqdm bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True,
                smoothing=0.1)

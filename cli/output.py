"""Rendering: readable tables for people, JSON lines for machines (one compact object per line, for every
command with ``--json``), progress bars on stderr. Only the CLI prints."""
from __future__ import annotations

import json
import math
import sys
from typing import Iterable

import click
import pyarrow as pa
from tqdm import tqdm

from retrieval.io.workers import Progress

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
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def json_line(obj: dict) -> str:
    """One object as one compact JSON line (non-finite floats become null; other odd values their str)."""
    return json.dumps(_jsonable(obj), ensure_ascii=False, default=str, separators=(",", ":"))


def print_json(obj: dict) -> None:
    """One JSON line on stdout."""
    click.echo(json_line(obj))


def print_json_lines(rows: pa.Table | Iterable[dict]) -> None:
    """A table's rows, or dicts, as JSON lines on stdout."""
    for row in rows.to_pylist() if isinstance(rows, pa.Table) else rows:
        print_json(row)


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


class ProgressBars:
    """The CLI's renderer of the library's progress reports (``on_progress(Progress)``): one tqdm bar per stage on
    stderr (hidden when stderr is not a terminal), and for the stages in ``lines`` also one line per report,
    e.g. ``epoch 2/10  loss 0.4312``. Use as a context manager, or call ``close``."""

    def __init__(self, unit: str = "it", lines: Iterable[str] = ()):
        self.unit, self.lines, self.bars = unit, set(lines), {}

    def __call__(self, p: Progress) -> None:
        bar = self.bars.get(p.stage)
        if bar is None:
            bar = self.bars[p.stage] = tqdm(total=p.total, desc=p.stage, unit=self.unit, file=sys.stderr, disable=None,
                                            dynamic_ncols=True, smoothing=0.1)
        bar.total, bar.n = p.total, p.done
        if p.counts:
            bar.set_postfix(p.counts, refresh=False)
        bar.refresh()
        if p.stage in self.lines:
            counts = "".join(f"  {k} {_fmt(v)}" for k, v in p.counts.items())
            click.echo(f"{p.stage} {p.done}/{p.total}{counts}", err=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

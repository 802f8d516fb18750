"""Options shared by several commands, each defined once."""
from __future__ import annotations

import math

import click

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Machine-readable output: JSON lines, one compact object per line.")
device_option = click.option("--device", default=None, help="cuda, cuda:N or cpu (default: CUDA when present).")
MAX_K = 10_000  # results per query: more is a mistake, not a search


def top_k_option(default: int, maximum: int = MAX_K, help_text: str | None = None):
    """``-k / --top-k``: an integer in [1, maximum]."""
    return click.option("-k", "--top-k", "k", default=default, show_default=True, type=click.IntRange(1, maximum),
                        help=help_text)


class Cosine(click.ParamType):
    """A cosine score: a number in [-1, 1] (nan and infinities refused)."""

    name = "cosine"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            x = value
        else:
            try:
                x = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if math.isnan(x) or not -1.0 <= x <= 1.0:
            self.fail(f"{value} is not a cosine score in [-1, 1]", param, ctx)
        return x


min_score_option = click.option("--min-score", type=Cosine(), default=None,
                                help="Drop hits scoring below this cosine, in [-1, 1].")

"""Brace patterns naming shards: ``shards/{00000..00099}.tar`` (numeric ranges keep their zero padding), ``{a,b}``
(alternatives); several groups multiply, the first group varying slowest.

A pattern is checked whole before any name is made: ``count_braces`` says how many names it stands for from the
groups' sizes alone, and ``iter_braces`` refuses a pattern naming more than ``limit`` (default ``MAX_NAMES``) in one
line, then yields the names one at a time (an odometer over the groups, nothing materialised). So
``x/{000000..999999999}.tar`` (a billion names: a typo, not a dataset) is refused at once in constant memory.
Groups do not nest; a brace outside a group is refused.
"""
from __future__ import annotations

import math
import re
from typing import Iterator, Sequence

from retrieval.errors import InvalidInput

MAX_NAMES = 1_000_000
GROUP = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(\d+)\.\.(\d+)")


class _Range:
    """The options of ``{lo..hi}``, made on demand: ``size`` of them, the i-th one ``str(lo + i)`` zero-padded."""

    def __init__(self, lo: int, hi: int, width: int):
        self.lo, self.size, self.width = lo, hi - lo + 1, width

    def __getitem__(self, i: int) -> str:
        return str(self.lo + i).zfill(self.width)


class _Choices:
    """The options of ``{a,b,...}``."""

    def __init__(self, options: list[str]):
        self.options, self.size = options, len(options)

    def __getitem__(self, i: int) -> str:
        return self.options[i]


def _group(body: str, pattern: str) -> _Range | _Choices:
    rng = _RANGE.fullmatch(body)
    if rng:
        lo, hi = int(rng.group(1)), int(rng.group(2))
        if hi < lo:
            raise InvalidInput(f"brace range {{{body}}} in {pattern} counts down")
        return _Range(lo, hi, len(rng.group(1)) if rng.group(1).startswith("0") else 0)
    if "," in body:
        return _Choices(body.split(","))
    raise InvalidInput(f"cannot expand {{{body}}} in {pattern}: use {{000..099}} or {{a,b}}")


def _parse(pattern: str) -> tuple[list[str], list[_Range | _Choices]]:
    """``pattern`` -> (literals, groups): ``literals[0] group[0] literals[1] ... group[-1] literals[-1]``."""
    literals, groups, pos = [], [], 0
    for m in GROUP.finditer(pattern):
        literals.append(pattern[pos:m.start()])
        groups.append(_group(m.group(1), pattern))
        pos = m.end()
    literals.append(pattern[pos:])
    if any("{" in s or "}" in s for s in literals):
        raise InvalidInput(f"unbalanced or nested braces in {pattern}: use groups such as {{000..099}} or {{a,b}}")
    return literals, groups


def count_braces(pattern: str) -> int:
    """How many names ``pattern`` stands for (1 without groups), without making them; ``InvalidInput`` when it is
    malformed."""
    _, groups = _parse(pattern)
    return math.prod(g.size for g in groups)


def iter_braces(pattern: str, limit: int = MAX_NAMES) -> Iterator[str]:
    """The names of ``pattern`` in order, one at a time. ``InvalidInput`` (before the first name) when it is
    malformed or names more than ``limit``."""
    literals, groups = _parse(pattern)
    total = math.prod(g.size for g in groups)
    if total > limit:
        raise InvalidInput(f"{pattern} names {total:,} shards; at most {limit:,} are allowed in one run "
                           "(check the range, or index the shards in several runs)")
    return _odometer(literals, groups)


def _odometer(literals: list[str], groups: Sequence[_Range | _Choices]) -> Iterator[str]:
    at = [0] * len(groups)  # every group has at least one option
    while True:
        yield "".join(lit + g[i] for lit, g, i in zip(literals, groups, at)) + literals[-1]
        pos = len(at) - 1
        while pos >= 0 and at[pos] + 1 == groups[pos].size:
            at[pos] = 0
            pos -= 1
        if pos < 0:
            return
        at[pos] += 1


def expand_braces(pattern: str, limit: int = MAX_NAMES) -> list[str]:
    """``a/{000..002}.tar`` -> ``a/000.tar a/001.tar a/002.tar``; ``{x,y}`` lists alternatives; several groups
    multiply. ``InvalidInput`` on a malformed pattern or one naming more than ``limit`` files."""
    return list(iter_braces(pattern, limit))

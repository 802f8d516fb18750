"""The syntax tree of a ``--where`` filter and the normal form every engine receives.

``normal_form(node)`` rewrites a parsed filter into an equivalent one in which NOT stands only directly over a
predicate: ``NOT NOT x`` is ``x``; NOT over AND/OR goes down by De Morgan; NOT over IN, LIKE, BETWEEN and IS NULL
becomes the predicate's own negation; AND inside AND and OR inside OR are flattened. Every step holds in SQL's
three-valued logic (Kleene: NULL for unknown), so the rows selected never change. The engines then see at most one
NOT per predicate, never a chain of them (Lance's SQL parser refuses about two dozen nested NOTs and some versions
take exponential time over them).

``check_size(node)`` bounds what is left: at most ``MAX_LEVELS`` nested AND/OR/NOT and ``MAX_NODES`` nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Union

MAX_LEVELS = 24     # nested AND / OR / NOT left after normal_form (Lance's parser takes about 40)
MAX_NODES = 1_000   # predicates and AND / OR / NOT nodes (an IN list counts once)


@dataclass(frozen=True)
class Col:
    name: str      # the schema's spelling


@dataclass(frozen=True)
class Lit:
    value: object  # str, int, float, bool


@dataclass(frozen=True)
class Compare:
    op: str
    left: Union[Col, Lit]
    right: Union[Col, Lit]


@dataclass(frozen=True)
class Pred:
    """``col IN args`` / ``LIKE args[0]`` / ``BETWEEN args[0] AND args[1]`` / ``IS NULL`` / ``= TRUE`` (bool col)."""
    op: str        # "IN" | "LIKE" | "BETWEEN" | "IS NULL" | "TRUE"
    col: Col
    args: tuple = ()
    negated: bool = False


@dataclass(frozen=True)
class Logic:
    op: str        # "AND" | "OR" | "NOT" (one arg)
    args: tuple


Node = Union[Compare, Pred, Logic]
_DUAL = {"AND": "OR", "OR": "AND"}


def normal_form(node: Node, negate: bool = False) -> Node:
    """``node`` (or ``NOT node`` when ``negate``) with NOT only over predicates and AND/OR flattened.

    Iterative over NOT chains, recursive over AND/OR only (their depth is bounded by the parser).
    """
    while isinstance(node, Logic) and node.op == "NOT":
        node, negate = node.args[0], not negate
    if isinstance(node, Logic):
        op = _DUAL[node.op] if negate else node.op
        args: list[Node] = []
        for arg in node.args:
            arg = normal_form(arg, negate)
            args.extend(arg.args if isinstance(arg, Logic) and arg.op == op else (arg,))
        return Logic(op, tuple(args))
    if not negate:
        return node
    if isinstance(node, Pred) and node.op != "TRUE":
        return replace(node, negated=not node.negated)
    return Logic("NOT", (node,))   # comparisons keep their NOT: NaN orders differently across engines


def levels(node: Node) -> int:
    """Nested AND / OR / NOT nodes on the deepest path (0 for a single predicate)."""
    if not isinstance(node, Logic):
        return 0
    return 1 + max(levels(a) for a in node.args)


def count_nodes(node: Node) -> int:
    """Predicates plus AND / OR / NOT nodes."""
    if not isinstance(node, Logic):
        return 1
    return 1 + sum(count_nodes(a) for a in node.args)


def columns(node: Node) -> list[str]:
    """The column names ``node`` reads, each once, in order of appearance."""
    if isinstance(node, Logic):
        return list(dict.fromkeys(c for a in node.args for c in columns(a)))
    if isinstance(node, Compare):
        return list(dict.fromkeys(x.name for x in (node.left, node.right) if isinstance(x, Col)))
    return [node.col.name]


def size_problem(node: Node) -> str | None:
    """Why ``node`` (in normal form) is too large for the engines, or None."""
    n = count_nodes(node)
    if n > MAX_NODES:
        return f"{n:,} conditions and AND/OR/NOT operators; at most {MAX_NODES:,} (use IN (...) for lists of values)"
    depth = levels(node)
    if depth > MAX_LEVELS:
        return f"AND/OR/NOT nested {depth} levels deep once simplified; at most {MAX_LEVELS} are allowed"
    return None

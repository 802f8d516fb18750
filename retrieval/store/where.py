"""Row filters (``--where``): parsed and checked once, then rendered as SQL for the backend's engine.

A filter is a small boolean language over the table's own columns, the same for every backend and caller::

    expr      := term (OR term)*           term := factor (AND factor)*        factor := NOT factor | primary
    primary   := "(" expr ")" | predicate
    predicate := operand (= | != | <> | < | <= | > | >=) operand
               | column [NOT] IN "(" literal ("," literal)* ")"
               | column [NOT] LIKE 'pattern'              (% any run, _ any one character)
               | column [NOT] BETWEEN literal AND literal
               | column IS [NOT] NULL
               | boolean_column
    operand   := column | literal       literal := 'string' ('' inside is ') | [-]number | TRUE | FALSE

Columns are bare ASCII names, "double-quoted" or `back-quoted` (case-insensitive when unambiguous); literals must
suit the column's type (integer, float, string, bool); other columns (vectors, timestamps, binary) allow only
IS [NOT] NULL. There are no functions, casts, subqueries, arithmetic, comments or second statements, so a filter
can never reach anything but the table's rows. A column named exactly (quoted or not) is that column, even beside
one that differs only in case. The tree is then put in normal form (``where_tree``: at most one NOT per predicate,
AND/OR flattened) and bounded in size before any engine sees it.

``filter_sql(where, schema, dialect)`` is the one call a store makes: ``"duckdb"`` quotes names as "name",
``"lance"`` (DataFusion SQL) as `name`. Every refusal is ``InvalidFilter`` with a one-line reason. The work is in
three modules: ``where_parse`` (tokens, the parser and its type checks), ``where_tree`` (the syntax tree, its normal
form and size bounds) and this one (the entry points and the SQL each engine receives).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pyarrow as pa

from retrieval.errors import InvalidFilter
from retrieval.store.where_parse import Parser, short, tokens
from retrieval.store.where_tree import Col, Compare, Logic, Node, normal_form, size_problem

MAX_CHARS = 262_144   # internal callers send id lists of up to 4,096 ids; anything longer is refused
DIALECTS = ("duckdb", "lance")


@dataclass(frozen=True)
class Filter:
    """A validated filter: ``node`` is its syntax tree in normal form, ``sql(dialect)`` its canonical SQL text;
    ``names`` renames columns in that text (an engine reading them under other names, see ``faiss_filter``)."""
    text: str
    node: Node

    def sql(self, dialect: str, names: Mapping[str, str] | None = None) -> str:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown SQL dialect {dialect!r}")
        return _render(self.node, dialect, names or {})


def filter_sql(where: str | None, schema: pa.Schema, dialect: str) -> str | None:
    """The filter's safe SQL for ``dialect`` ("duckdb" or "lance"); None (or blank) stays None."""
    if where is None or not where.strip():
        return None
    return parse_filter(where, schema).sql(dialect)


def parse_filter(text: str, schema: pa.Schema) -> Filter:
    """Parse and type-check ``text`` against ``schema``; ``InvalidFilter`` when it is not a filter we allow."""
    if not isinstance(text, str):
        raise InvalidFilter(f"bad --where filter: it must be text, not {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise InvalidFilter(f"bad --where filter: {len(text):,} characters long; at most {MAX_CHARS:,} are allowed")
    bad = next((c for c in text if c == "\x00" or "\ud800" <= c <= "\udfff"), None)
    if bad is not None:
        raise InvalidFilter(f"bad --where filter: the character U+{ord(bad):04X} is not allowed")
    parser = Parser(text, tokens(text), schema)
    node = parser.expr(0)
    if parser.peek() is not None:
        parser.fail(f"unexpected {parser.peek()[1]!r} after a complete filter")
    node = normal_form(node)   # at most one NOT per predicate, AND/OR flattened: the same rows
    too_big = size_problem(node)
    if too_big:
        raise InvalidFilter(f"bad --where filter {short(text)}: {too_big}")
    return Filter(text, node)


# -- rendering ---------------------------------------------------------------------------------------------------
def _ident(name: str, dialect: str) -> str:
    if dialect == "duckdb":
        return '"' + name.replace('"', '""') + '"'
    if "`" in name:
        raise InvalidFilter(f"column {name!r} contains a backquote and cannot be filtered on the lance backend")
    return f"`{name}`"


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return repr(v)


def _render(node: Node, dialect: str, names: Mapping[str, str]) -> str:
    def arg(x) -> str:
        return _ident(names.get(x.name, x.name), dialect) if isinstance(x, Col) else _value(x.value)

    if isinstance(node, Logic):
        if node.op == "NOT":
            return f"(NOT {_render(node.args[0], dialect, names)})"
        return "(" + f" {node.op} ".join(_render(a, dialect, names) for a in node.args) + ")"
    if isinstance(node, Compare):
        return f"({arg(node.left)} {node.op} {arg(node.right)})"
    col, neg = arg(node.col), "NOT " if node.negated else ""
    if node.op == "IN":
        return f"({col} {neg}IN ({', '.join(arg(v) for v in node.args)}))"
    if node.op == "LIKE":
        return f"({col} {neg}LIKE {arg(node.args[0])})"
    if node.op == "BETWEEN":
        return f"({col} {neg}BETWEEN {arg(node.args[0])} AND {arg(node.args[1])})"
    if node.op == "IS NULL":
        return f"({col} IS {neg}NULL)"
    return f"({col} = TRUE)"

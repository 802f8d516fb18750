"""The ``--where`` parser: filter text -> tokens -> a syntax tree (``where_tree``), every column and literal
checked against the table's schema as it is read (the grammar is in ``where``'s docstring).

``tokens`` splits the text (anything outside the language is refused at its character, with the reason);
``Parser(text, tokens, schema).expr(0)`` reads one filter, refusing unknown columns, literals that do not suit
their column's type and nesting deeper than ``MAX_DEPTH``. ``where.parse_filter`` is the one caller.
"""
from __future__ import annotations

import math
import re
from typing import Union

import pyarrow as pa

from retrieval.errors import InvalidFilter
from retrieval.store.where_tree import Col, Compare, Lit, Logic, Node, Pred

MAX_DEPTH = 64        # nesting of parentheses and NOT
ALLOWED = ("allowed: comparisons (= != < <= > >=), AND/OR/NOT, parentheses, IN (...), LIKE, BETWEEN, "
           "IS [NOT] NULL over the table's columns with string, number, TRUE/FALSE literals")
KEYWORDS = {"AND", "OR", "NOT", "IN", "LIKE", "BETWEEN", "IS", "NULL", "TRUE", "FALSE"}
COMPARE = ("=", "!=", "<>", "<", "<=", ">", ">=")
FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!=", "<>": "<>"}

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<str>'(?:[^']|'')*')
  | (?P<qid>"(?:[^"]|"")*"|`[^`]*`)
  | (?P<num>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|<>|!=|=|<|>|\(|\)|,|-|\+)
""", re.VERBOSE)
_BAD = [  # text the tokens cannot start with, and why (the first that matches is reported)
    (";", "one expression only: ';' is not allowed"),
    ("--", "comments are not allowed"),
    ("/*", "comments are not allowed"),
    ("||", "string concatenation is not allowed"),
    ("*", "'*' is not allowed (no arithmetic, no subqueries)"),
    ("/", "arithmetic is not allowed"),
    ("%", "arithmetic is not allowed"),
    ("'", "a string literal is not closed"),
    ('"', "a quoted column name is not closed"),
    ("`", "a quoted column name is not closed"),
]


def short(text: str) -> str:
    """The filter as quoted in an error message (at most 80 characters)."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


def tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, position) of each token, blanks left out; ``InvalidFilter`` at the first character outside the
    language."""
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or (m.lastgroup == "op" and text.startswith("--", pos)):
            why = next((msg for s, msg in _BAD if text.startswith(s, pos)), None)
            why = why or f"the character {text[pos]!r} (U+{ord(text[pos]):04X}) is not allowed"
            raise InvalidFilter(f"bad --where filter {short(text)} at character {pos + 1}: {why}; {ALLOWED}")
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group(), pos))
        pos = m.end()
    return out


def column_kind(t: pa.DataType) -> str | None:
    """The literal kind a column compares with, or None when it only allows IS [NOT] NULL."""
    kinds = (
        ("int", pa.types.is_integer),
        ("float", pa.types.is_floating),
        ("float", pa.types.is_decimal),
        ("str", pa.types.is_string),
        ("str", pa.types.is_large_string),
        ("bool", pa.types.is_boolean),
    )
    return next((kind for kind, test in kinds if test(t)), None)


_FITS = {"int": ("int",), "float": ("int", "float"), "str": ("str",), "bool": ("bool",)}


class Parser:
    """Recursive descent over ``tokens`` of ``text`` (for error messages), checked against ``schema``."""

    def __init__(self, text: str, tokens: list, schema: pa.Schema):
        self.text = text
        self.toks = tokens
        self.i = 0  # the next token
        self.schema = schema

    # -- helpers ---------------------------------------------------------------------------------------------------
    def fail(self, why: str):
        raise InvalidFilter(f"bad --where filter {short(self.text)}: {why}; {ALLOWED}")

    def peek(self, ahead: int = 0):
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else None

    def is_kw(self, word: str, ahead: int = 0) -> bool:
        t = self.peek(ahead)
        return t is not None and t[0] == "word" and t[1].upper() == word

    def take_kw(self, word: str) -> bool:
        if self.is_kw(word):
            self.i += 1
            return True
        return False

    def expect(self, value: str, what: str) -> None:
        t = self.peek()
        if t is None or t[0] != "op" or t[1] != value:
            self.fail(f"expected {what}, found {'the end' if t is None else repr(t[1])}")
        self.i += 1

    # -- grammar ---------------------------------------------------------------------------------------------------
    def expr(self, depth: int) -> Node:
        args = [self.term(depth)]
        while self.take_kw("OR"):
            args.append(self.term(depth))
        return args[0] if len(args) == 1 else Logic("OR", tuple(args))

    def term(self, depth: int) -> Node:
        args = [self.factor(depth)]
        while self.take_kw("AND"):
            args.append(self.factor(depth))
        return args[0] if len(args) == 1 else Logic("AND", tuple(args))

    def factor(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            self.fail(f"nested more than {MAX_DEPTH} levels deep")
        if self.take_kw("NOT"):
            return Logic("NOT", (self.factor(depth + 1),))
        t = self.peek()
        if t is not None and t[:2] == ("op", "("):
            self.i += 1
            node = self.expr(depth + 1)
            self.expect(")", "')'")
            return node
        return self.predicate()

    def predicate(self) -> Node:
        left = self.operand()
        negated = self.is_kw("NOT") and any(self.is_kw(w, 1) for w in ("IN", "LIKE", "BETWEEN"))
        if negated:
            self.i += 1
        t = self.peek()
        if t is not None and t[0] == "op" and t[1] in COMPARE:
            self.i += 1
            return self.compare(t[1], left, self.operand())
        for word, method in (("IN", self.in_list), ("LIKE", self.like), ("BETWEEN", self.between),
                             ("IS", self.is_null)):
            if self.take_kw(word):
                if not isinstance(left, Col):
                    self.fail(f"{word} needs a column on its left, not the literal {left.value!r}")
                return method(left, negated)
        if isinstance(left, Col) and column_kind(self.schema.field(left.name).type) == "bool":
            return Pred("TRUE", left)
        if t is not None and t[0] == "op" and t[1] in "+-":
            self.fail("arithmetic is not allowed")
        found = "the end" if t is None else repr(t[1])
        after = left.name if isinstance(left, Col) else repr(left.value)
        self.fail(f"expected a comparison, IN, LIKE, BETWEEN or IS after {after}, found {found}")

    def operand(self) -> Union[Col, Lit]:
        t = self.peek()
        if t is None:
            self.fail("the filter ends where a column or value was expected")
        kind, val, _ = t
        if kind == "op" and val in "+-":
            nxt = self.peek(1)
            if nxt is None or nxt[0] != "num":
                self.fail("arithmetic is not allowed")
            self.i += 2
            return Lit(-_number(self, nxt[1]) if val == "-" else _number(self, nxt[1]))
        self.i += 1
        if kind == "str":
            return Lit(val[1:-1].replace("''", "'"))
        if kind == "num":
            return Lit(_number(self, val))
        if kind == "qid":
            quote = val[0]
            return self.column(val[1:-1].replace(quote * 2, quote) if quote == '"' else val[1:-1])
        if kind == "word":
            up = val.upper()
            if up in ("TRUE", "FALSE"):
                return Lit(up == "TRUE")
            if up == "NULL":
                self.fail("NULL is not a value to compare with; use column IS NULL or IS NOT NULL")
            nxt = self.peek()
            if nxt is not None and nxt[:2] == ("op", "("):
                self.fail(f"functions are not allowed ({val}(...))")
            if up == "SELECT":
                self.fail("subqueries are not allowed")
            if up in KEYWORDS:
                self.fail(f"expected a column or value, found {val!r}")
            return self.column(val)
        self.fail(f"expected a column or value, found {val!r}")

    def column(self, name: str) -> Col:
        names = self.schema.names
        if name not in names:
            folded = [n for n in names if n.lower() == name.lower()]
            if len(folded) != 1:
                self.fail(f"unknown column {name!r}; the columns are {', '.join(names)}")
            name = folded[0]
        return Col(name)

    def compare(self, op: str, left, right) -> Compare:
        if isinstance(left, Lit) and isinstance(right, Col):
            left, right, op = right, left, FLIP[op]
        if not isinstance(left, Col):
            self.fail("a comparison needs a column on at least one side")
        kind = self.filterable(left)
        if isinstance(right, Col):
            other = self.filterable(right)
            if _FITS[kind] != _FITS[other] and {kind, other} != {"int", "float"}:
                self.fail(f"columns {left.name} ({kind}) and {right.name} ({other}) cannot be compared")
        else:
            self.check_lit(left, kind, right)
        if kind == "bool" and op not in ("=", "!=", "<>"):
            self.fail(f"{left.name} is TRUE/FALSE: compare it with = or !=")
        return Compare("<>" if op == "!=" else op, left, right)

    def in_list(self, col: Col, negated: bool) -> Pred:
        kind = self.filterable(col)
        self.expect("(", "'(' after IN")
        values = [self.literal(col, kind)]
        while self.peek() is not None and self.peek()[:2] == ("op", ","):
            self.i += 1
            values.append(self.literal(col, kind))
        self.expect(")", "',' or ')' in the IN list")
        return Pred("IN", col, tuple(values), negated)

    def like(self, col: Col, negated: bool) -> Pred:
        if self.filterable(col) != "str":
            self.fail(f"LIKE needs a text column; {col.name} is {self.schema.field(col.name).type}")
        pattern = self.literal(col, "str")
        if "\\" in pattern.value:
            self.fail("a LIKE pattern cannot contain a backslash (engines differ on escapes); use _ for one character")
        return Pred("LIKE", col, (pattern,), negated)

    def between(self, col: Col, negated: bool) -> Pred:
        kind = self.filterable(col)
        low = self.literal(col, kind)
        if not self.take_kw("AND"):
            self.fail("BETWEEN needs: column BETWEEN low AND high")
        return Pred("BETWEEN", col, (low, self.literal(col, kind)), negated)

    def is_null(self, col: Col, negated: bool) -> Pred:
        if negated:
            self.fail("write column IS NOT NULL, not NOT IS")
        negated = self.take_kw("NOT")
        if not self.take_kw("NULL"):
            self.fail("IS must be followed by NULL or NOT NULL")
        return Pred("IS NULL", col, (), negated)

    def literal(self, col: Col, kind: str) -> Lit:
        value = self.operand()
        if isinstance(value, Col):
            self.fail(f"expected a value here, found the column {value.name}")
        self.check_lit(col, kind, value)
        return value

    def filterable(self, col: Col) -> str:
        kind = column_kind(self.schema.field(col.name).type)
        if kind is None:
            self.fail(f"column {col.name} ({self.schema.field(col.name).type}) allows only IS NULL / IS NOT NULL")
        return kind

    def check_lit(self, col: Col, kind: str, lit: Lit) -> None:
        got = "bool" if isinstance(lit.value, bool) else type(lit.value).__name__  # int, float, str
        if got not in _FITS[kind]:
            want = {"int": "a whole number", "float": "a number", "str": "a 'quoted' string",
                    "bool": "TRUE or FALSE"}[kind]
            self.fail(f"{col.name} is {self.schema.field(col.name).type}: compare it with {want}, not {lit.value!r}")
        t = self.schema.field(col.name).type
        if got == "int" and kind == "int":
            unsigned = pa.types.is_unsigned_integer(t)
            bits = t.bit_width - (0 if unsigned else 1)
            low, high = (0 if unsigned else -(2 ** bits)), 2 ** bits - 1
            if not low <= lit.value <= high:
                self.fail(f"{lit.value} is outside the range of {col.name} ({t}: {low} to {high})")


def _number(parser: Parser, text: str):
    value = int(text) if text.isdigit() else float(text)
    if not math.isfinite(value) or abs(value) > 2 ** 63 - 1:
        parser.fail(f"the number {text} is out of range")
    return value

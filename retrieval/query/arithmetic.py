"""Query arithmetic, rclip's syntax: ``"beach" + "sunset:0.5" - "people"``, texts or images, weighted.

One syntax everywhere: the CLI takes the terms as separate arguments (``clipdex search IX beach + sunset:0.5 -
people``) or as one quoted string, the API and the page as one string; ``--add IMAGE`` / ``--subtract TEXT`` (and
the API's ``add`` / ``subtract`` lists) add terms. A term's weight follows its last ``:`` when that parses as a
number (default 1). The query vector is ``norm(sum a_j e_j - sum b_j n_j)`` over the terms' unit vectors
(``retrieval.algorithms.fusion.combine_vectors``). Only a string whose every term is quoted and joined by ``+`` or
``-`` is arithmetic, so a plain query such as ``t-shirt - red`` stays a plain text.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from retrieval.algorithms.fusion import combine_vectors
from retrieval.errors import InvalidInput

__all__ = ["Term", "arithmetic_vector", "parse_parts", "parse_query", "split_weight", "term_words"]

_QUOTED = re.compile(r'\s*([+-])?\s*"([^"]*)"\s*')
MAX_TERMS = 16
MAX_WEIGHT = 100.0


@dataclass(frozen=True)
class Term:
    """One term: ``kind`` "text" or "image" (a path, or a PIL image), its weight and sign (+1 added, -1 taken
    away)."""

    kind: str
    value: object
    weight: float = 1.0
    sign: int = 1


def split_weight(term: str) -> tuple[str, float]:
    """``"sunset:0.5"`` -> ("sunset", 0.5); ``"sunset"`` -> ("sunset", 1.0). A weight must be finite, in [0, 100]."""
    head, sep, tail = term.rpartition(":")
    if sep and head.strip():
        try:
            w = float(tail)
        except ValueError:
            return term, 1.0
        if not math.isfinite(w) or not 0 <= w <= MAX_WEIGHT:
            raise InvalidInput(f"query term {term!r}: a weight must be a number in [0, {MAX_WEIGHT:g}]")
        return head, w
    return term, 1.0


def _text_term(raw: str, sign: int) -> Term:
    text, w = split_weight(raw)
    if not text.strip():
        raise InvalidInput("empty query term")
    return Term("text", text.strip(), w, sign)


def parse_query(text: str) -> list[Term] | None:
    """A query string -> its terms when it is arithmetic (``"a" + "b:0.5" - "c"``: every term quoted), else None."""
    if '"' not in text:
        return None
    pos, terms = 0, []
    while pos < len(text):
        m = _QUOTED.match(text, pos)
        if m is None or (terms and not m.group(1)):
            return None
        terms.append(_text_term(m.group(2), -1 if m.group(1) == "-" else 1))
        pos = m.end()
    if not terms:
        return None
    if len(terms) > MAX_TERMS:
        raise InvalidInput(f"query arithmetic takes at most {MAX_TERMS} terms")
    return terms


def parse_parts(parts: Sequence[str]) -> list[Term] | None:
    """The CLI's arguments (``beach + sunset:0.5 - people``) -> terms; a single argument is a plain query unless it
    is arithmetic in the string form (:func:`parse_query`); None for a plain query."""
    parts = [p for p in parts if p.strip()]
    if len(parts) == 1:
        return parse_query(parts[0])
    if not parts:
        return None
    terms, sign = [], 1
    expect_term = True
    for p in parts:
        if p in ("+", "-"):
            if expect_term:
                raise InvalidInput(f"query arithmetic: {p!r} where a term was expected")
            sign, expect_term = (1 if p == "+" else -1), True
            continue
        if not expect_term:
            raise InvalidInput("query arithmetic: join terms with + or - (quote a query of several words)")
        terms.append(_text_term(p.strip().strip('"'), sign))
        expect_term = False
    if expect_term:
        raise InvalidInput("query arithmetic ends with an operator")
    if len(terms) > MAX_TERMS:
        raise InvalidInput(f"query arithmetic takes at most {MAX_TERMS} terms")
    return terms


def image_term(value, sign: int) -> Term:
    """``--add IMAGE[:W]`` / ``--subtract IMAGE[:W]``: a path keeps a trailing ``:W`` as weight only when the
    path without it exists."""
    if isinstance(value, (str, os.PathLike)):
        path, w = split_weight(os.fspath(value))
        if w != 1.0 and not os.path.exists(path):
            path, w = os.fspath(value), 1.0
        return Term("image", path, w, sign)
    return Term("image", value, 1.0, sign)


def term_words(terms: Sequence[Term]) -> str:
    """The words a keyword search looks for: the added text terms."""
    return " ".join(str(t.value) for t in terms if t.kind == "text" and t.sign > 0 and t.weight > 0)


def arithmetic_vector(terms: Sequence[Term], encode_texts, encode_images) -> np.ndarray:
    """Terms -> (1, d) unit query vector; ``encode_texts(list[str])`` and ``encode_images(list)`` give (n, d)."""
    if not any(t.sign > 0 for t in terms):
        raise InvalidInput("query arithmetic needs at least one added term")
    vecs: list[np.ndarray | None] = [None] * len(terms)
    for kind, encode in (("text", encode_texts), ("image", encode_images)):
        idx = [i for i, t in enumerate(terms) if t.kind == kind]
        if idx:
            for i, v in zip(idx, encode([terms[i].value for i in idx])):
                vecs[i] = v
    add = [i for i, t in enumerate(terms) if t.sign > 0]
    sub = [i for i, t in enumerate(terms) if t.sign < 0]
    try:
        q = combine_vectors(np.stack([vecs[i] for i in add]), [terms[i].weight for i in add],
                            np.stack([vecs[i] for i in sub]) if sub else None, [terms[i].weight for i in sub])
    except ValueError as exc:
        raise InvalidInput(f"query arithmetic: {exc}") from None
    return q[None, :]

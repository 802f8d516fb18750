"""Words for keyword search: one tokeniser for documents and queries, on both backends (pure functions).

A text becomes lower-case terms (Unicode NFKC, accents kept, so both full-text engines see the same tokens):

- every run of letters and digits (``invoice_2024.png`` -> ``invoice``, ``2024``, ``png``: paths and file names
  split on their separators);
- the parts of a run at letter/digit and lower/upper case changes (``TOTAL42`` -> ``total``, ``42``;
  ``mainStreet`` -> ``main``, ``street``), beside the run itself;
- two neighbouring runs of one whitespace-free piece joined (``42.17`` -> ``4217``, ``A-113`` -> ``a113``), so
  a number or code keeps its shape and ``42.17`` is not the same as ``17.42``.

A query adds the joins of its neighbouring words (``main street`` -> ``mainstreet``): OCR often drops the
spaces between words of a sign, and file names often have none.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable

__all__ = ["complete_matches", "document_terms", "matched_terms", "query_terms", "query_words", "snippet", "terms"]

_RUN = re.compile(r"[^\W_]+")
_PARTS = re.compile(r"[^\W\d_]+|\d+")
_CASE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[^\W\d_]+")
MAX_TERM = 40  # longer runs (hashes, base64) are no words anyone types


def _split(run: str) -> list[str]:
    out = []
    for part in _PARTS.findall(run):
        out.extend(_CASE.findall(part) if not part.isdigit() else [part])
    return out


def terms(text: str | None) -> list[str]:
    """``text`` -> its terms, in order, repeats kept (a term's count is its frequency)."""
    if not text:
        return []
    out: list[str] = []
    for piece in unicodedata.normalize("NFKC", text).split():
        runs = _RUN.findall(piece)
        for i, run in enumerate(runs):
            low = run.lower()
            if len(low) <= MAX_TERM:
                out.append(low)
            parts = _split(run)
            if len(parts) > 1:
                out.extend(p.lower() for p in parts if len(p) <= MAX_TERM)
            if i and len(runs[i - 1]) + len(run) <= MAX_TERM:  # neighbours in one piece: 42.17, A-113, a_b
                out.append((runs[i - 1] + run).lower())
    return out


def document_terms(fields: Iterable[str | None]) -> str:
    """A row's text fields -> one document string (its terms joined by spaces), what both engines index."""
    return " ".join(t for f in fields for t in terms(f))


def query_terms(text: str, max_join: int = 3) -> list[str]:
    """A query -> its distinct terms, plus each run of up to ``max_join`` neighbouring words written together."""
    out = list(dict.fromkeys(terms(text)))
    words = ["".join(_RUN.findall(w)).lower() for w in unicodedata.normalize("NFKC", text).split()]
    words = [w for w in words if w]
    for n in range(2, max_join + 1):
        for i in range(len(words) - n + 1):
            joined = "".join(words[i:i + n])
            if len(joined) <= MAX_TERM and joined not in out:
                out.append(joined)
    return out


def query_words(text: str, max_join: int = 3) -> list[set[str]]:
    """A query -> one set per word it holds (a whitespace piece with letters or digits): the terms any of which
    means a row carries that word, in the order written: the word whole (its runs joined: ``42.17`` -> ``4217``,
    ``XV-8807`` -> ``xv8807``, so ``17.42`` is not ``42.17``) and each join of up to ``max_join`` neighbouring
    words that holds it (``main street`` -> ``mainstreet``, as :func:`query_terms` looks for)."""
    words = ["".join(_RUN.findall(w)).lower() for w in unicodedata.normalize("NFKC", text).split()]
    words = [w for w in words if w]
    out = [{w} if len(w) <= MAX_TERM else set() for w in words]
    for n in range(2, max_join + 1):
        for i in range(len(words) - n + 1):
            joined = "".join(words[i:i + n])
            if len(joined) <= MAX_TERM:
                for j in range(i, i + n):
                    out[j].add(joined)
    return out


def complete_matches(words: list[set[str]], documents: list[str]) -> list[bool]:
    """Which of ``documents`` (n :func:`document_terms` strings) carry every one of the query's ``words`` (from
    :func:`query_words`) -> (n,) bools; all False when the query has no words."""
    out = []
    for doc in documents:
        have = set(doc.split())
        out.append(bool(words) and all(alts & have for alts in words))
    return out


def matched_terms(query: list[str], document: str) -> list[str]:
    """The ``query`` terms (from :func:`query_terms`) that ``document`` (a :func:`document_terms` string) holds,
    in query order."""
    have = set(document.split())
    return [t for t in query if t in have]


def snippet(text: str | None, matched: list[str], width: int = 80) -> str | None:
    """Up to ``width`` characters of ``text`` around the first place one of ``matched`` occurs (its start when none
    does); None for no text."""
    if not text:
        return None
    flat = " ".join(text.split())
    low = flat.lower()
    hits = [low.find(t) for t in matched if t and low.find(t) >= 0]
    start = max(0, min(hits) - width // 4) if hits else 0
    cut = flat[start:start + width]
    return ("…" if start else "") + cut + ("…" if start + width < len(flat) else "")

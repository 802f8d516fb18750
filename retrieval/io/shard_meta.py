"""A shard sample's metadata (its ``json`` member, img2dataset's parquet row) -> string columns that every backend
can store and every later run can read again.

**Bounded parsing.** A json member over ``MAX_JSON_BYTES`` is not read, one nested deeper than ``MAX_JSON_DEPTH``
(objects and arrays) is not parsed: both are the sample's failure, never the shard's (a deep member would raise
``RecursionError`` in the parser and stop every run of its shard).

**Column names.** Nested objects are flattened (``{"a": {"b": 1}}`` -> ``a_b = "1"``, lists kept as json text) and
every character but a letter, a digit or ``_`` becomes ``_`` (``a.b`` -> ``a_b``, like nesting; ``we`ird`` ->
``we_ird``; ``EXIF Make`` -> ``EXIF_Make``): Lance takes no ``.`` or backquote in a field name, and a name it
cannot take would poison the table's schema for every later run. A key that still cannot be a column is dropped
and reported with its reason: an empty name, one starting with ``_`` (Lance reserves ``_rowid``, ``_distance``...),
one over ``MAX_NAME_CHARS``, or one giving the same column as an earlier key of the sample (the first one wins).
"""
from __future__ import annotations

import json
import re
from typing import Iterable

import numpy as np

MAX_JSON_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_NAME_CHARS = 64
_UNSAFE = re.compile(r"\W")  # anything but a letter, a digit or _ (Unicode letters and digits are kept)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_OPEN, _CLOSE = np.frombuffer(b"{[", np.uint8), np.frombuffer(b"}]", np.uint8)


class MetadataError(ValueError):
    """A json member that is not read: too big, too deep, not json, not an object."""


def json_depth(data: bytes) -> int:
    """The deepest nesting of objects and arrays in json text ``data`` (n bytes), brackets inside strings ignored:
    ``b'{"a": [1, "]"]}'`` -> 2, ``b'1'`` -> 0. O(n) (a regex pass and a cumulative sum over (n,) steps); for
    malformed text it is a number all the same, and the parser refuses the text."""
    b = np.frombuffer(_JSON_STRING.sub(b'""', data), np.uint8)
    step = np.isin(b, _OPEN).astype(np.int64) - np.isin(b, _CLOSE)
    return int(np.cumsum(step).max(initial=0))


def parse_json(data: bytes) -> dict:
    """A json member -> its object; ``MetadataError`` when it is over ``MAX_JSON_DEPTH`` deep, does not parse or
    is not an object (the size is checked before the member is read)."""
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise MetadataError(f"is nested {depth} levels deep, over the limit of {MAX_JSON_DEPTH}")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: a parser deeper than the check above
        raise MetadataError(f"does not parse: {str(exc)[:120]}") from None
    if not isinstance(obj, dict):
        raise MetadataError("is not a json object")
    return obj


def flatten(obj: dict, prefix: str = "") -> list[tuple[str, str | None]]:
    """A json object -> (key, value) pairs one level deep, in order: nested keys joined by ``_``, lists as json
    text, other values as strings (None stays None)."""
    out: list[tuple[str, str | None]] = []
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(flatten(v, name + "_"))
        elif v is None:
            out.append((name, None))
        else:
            out.append((name, json.dumps(v) if isinstance(v, list) else str(v)))
    return out


def column_name(key: str) -> tuple[str | None, str]:
    """A flattened key -> (its column name, "") or (None, why it cannot be one)."""
    name = _UNSAFE.sub("_", key)
    if not name:
        return None, "an empty name"
    if name.startswith("_"):
        return None, "starts with _ (reserved by the store)"
    if len(name) > MAX_NAME_CHARS:
        return None, f"over {MAX_NAME_CHARS} characters"
    return name, ""


def safe_columns(pairs: Iterable[tuple[str, str | None]], skip: frozenset[str] | set[str] = frozenset()
                 ) -> tuple[dict[str, str | None], list[tuple[str, str]]]:
    """(key, value) pairs -> ({column: value}, [(key, why it was dropped)]); names in ``skip`` are left out
    silently (the row's own columns)."""
    kept: dict[str, str | None] = {}
    dropped: list[tuple[str, str]] = []
    origin: dict[str, str] = {}
    for key, value in pairs:
        name, why = column_name(key)
        if name is None:
            dropped.append((key, why))
        elif name in skip:
            continue
        elif name in kept:
            dropped.append((key, f"same column as {origin[name]!r}"))
        else:
            kept[name], origin[name] = value, key
    return kept, dropped


def describe_dropped(dropped: list[tuple[str, str]], most: int = 8) -> str:
    """``[(key, why)]`` -> one line for an ``errors`` row (keys shortened, at most ``most`` listed)."""
    shown = "; ".join(f"{(k if len(k) <= 40 else k[:40] + '...')!r}: {why}" for k, why in dropped[:most])
    more = f"; and {len(dropped) - most} more" if len(dropped) > most else ""
    return f"json keys not kept as columns: {shown}{more}"

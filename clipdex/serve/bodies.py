"""Request bodies, read one way by every route: bounded JSON, or multipart form fields with one uploaded image.

``parse_json(raw)`` is the one JSON parser of the service (``/api/search``, ``/api/classify``, ``/knn-service``,
``/metadata`` and clip-retrieval's ``embedding_input`` string). It refuses, with a one-line ``InvalidInput``, what
the standard parser would take too far:

- nesting deeper than ``MAX_DEPTH`` levels: measured on the raw bytes *before* parsing (strings removed, then a
  running count of the brackets), since the C parser recurses and 100k levels end in a ``RecursionError``;
- more than ``MAX_VALUES`` values (separators counted the same way): no body of this API holds more;
- numbers that are not finite (``NaN``, ``Infinity``, ``1e400``, which Python would read as ``inf``): no field
  of this API takes them. Ranges are the fields' own (``SearchRequest``, ``compat.int_field``).
"""
from __future__ import annotations

import json
import math
import re

import numpy as np
from fastapi import Request

from clipdex.serve.queries import TooLarge
from retrieval.errors import InvalidInput

MAX_DEPTH = 32            # brackets open at once; the deepest real body is an object holding a list (2)
MAX_VALUES = 200_000      # separators (, and :); a vector holds at most 65,536 numbers
FORM_LISTS = ("negative", "negative_weights", "vector", "classes")
# One JSON string, escapes included; an unterminated one runs to the end of the input, so that a match never fails
# once begun (a failed match would be tried again from every escaped quote inside: quadratic time).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.S)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_CHUNK = 1 << 20


class _Refused(ValueError):
    """A number the parser refuses (raised from its hooks, reported as the reason)."""


def nesting_depth(brackets: bytes) -> int:
    """The deepest nesting of a string of brackets (``[{`` open, ``]}`` close): the running count's maximum.
    Worked through in blocks of ``_CHUNK`` bytes, so an attacker's megabytes of brackets cost little memory."""
    deepest = level = 0
    for start in range(0, len(brackets), _CHUNK):
        b = np.frombuffer(brackets, np.uint8, count=min(_CHUNK, len(brackets) - start), offset=start)
        run = np.cumsum(np.where((b == ord("[")) | (b == ord("{")), 1, -1), dtype=np.int64) + level
        deepest, level = max(deepest, int(run.max())), int(run[-1])
    return deepest


def _finite_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise _Refused(f"a number that is not finite: {text[:40]}")
    return x


def _no_constant(name: str):
    raise _Refused(f"a number that is not finite: {name}")


def parse_json(raw: bytes | str, what: str = "the body"):
    """JSON text -> a Python value, bounded in depth and values, numbers finite; ``InvalidInput`` otherwise."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    outside_strings = _STRING.sub(b"", data)
    depth = nesting_depth(_NOT_BRACKET.sub(b"", outside_strings))
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{what} is nested {depth} levels deep; at most {MAX_DEPTH} are accepted")
    values = outside_strings.count(b",") + outside_strings.count(b":")
    if values > MAX_VALUES:
        raise InvalidInput(f"{what} holds over {MAX_VALUES:,} values")
    try:
        return json.loads(data, parse_float=_finite_float, parse_constant=_no_constant)
    except _Refused as exc:
        raise InvalidInput(f"{what} holds {exc} (numbers must be finite)") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput(f"{what} is not JSON: {exc}") from None


def json_object(raw: bytes, empty: dict | None = None) -> dict:
    """A body that must be one JSON object; an empty body is ``empty`` when given (clip-retrieval), else refused."""
    if not raw.strip():
        if empty is not None:
            return dict(empty)
        raise InvalidInput("empty request body: send a JSON object")
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


async def read_json(request: Request, limit: int, empty: dict | None = None) -> dict:
    """The request's body (whatever its Content-Type says) as one JSON object of at most ``limit`` bytes."""
    raw = await request.body()
    if len(raw) > limit:
        raise TooLarge(f"request body over {limit:,} bytes")
    return json_object(raw, empty)


async def read_body(request: Request, limit: int) -> tuple[dict, bytes | None]:
    """JSON (whatever the Content-Type says) or multipart form fields -> (fields, uploaded image bytes); ``limit``
    bounds the uploaded image (a JSON body may hold it in base64: a third more, plus the other fields)."""
    ctype = request.headers.get("content-type", "")
    if not (ctype.startswith("multipart/form-data") or ctype.startswith("application/x-www-form-urlencoded")):
        return await read_json(request, body_limit(limit)), None
    form = await request.form(max_files=1, max_fields=64)
    fields: dict = {}
    upload = None
    for key, value in form.multi_items():
        if hasattr(value, "read"):
            if key != "image":
                raise InvalidInput(f"unexpected file field {key!r}; upload the query image as 'image'")
            if value.size is not None and value.size > limit:
                raise TooLarge(f"image is larger than the {limit:,}-byte upload limit")
            upload = await value.read()   # what the part holds (the body is bounded), never ``limit`` up front
            if len(upload) > limit:
                raise TooLarge(f"image is larger than the {limit:,}-byte upload limit")
        elif value == "":
            continue
        elif key in FORM_LISTS:
            fields.setdefault(key, []).append(value)
        else:
            fields[key] = value
    return fields, upload


def body_limit(max_upload: int) -> int:
    """Largest request body for an image upload limit: base64 and form overhead on top of the image."""
    return int(max_upload * 4 / 3) + (1 << 20)

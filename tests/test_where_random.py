"""Issue 19 #2: random --where filters give the same rows on both backends as a plain Python evaluation, on a table
whose column names differ only by case (``label``/``Label``, the built-in ``width`` beside a manifest's ``Width``)."""
import random

import numpy as np
import pyarrow as pa
import pytest

from clipdex.synthetic.embeddings import unit_vectors
from retrieval.index.directory import create_index

N = 48
COLS = {  # name -> (arrow type, values drawn from; None is NULL)
    "label": (pa.string(), ["a", "b", "c", None]),
    "Label": (pa.string(), ["a", "B", "c", None]),
    "width": (pa.int32(), [0, 3, 7, 640, None]),
    "Width": (pa.string(), ["x", "y", "w1", None]),
    "score": (pa.float64(), [0.5, 1.5, 3.0, None]),
    "flag": (pa.bool_(), [True, False, None]),
    "Flag": (pa.bool_(), [True, False, None]),
}
KIND = {"label": "str", "Label": "str", "width": "num", "Width": "str", "score": "num", "flag": "bool", "Flag": "bool"}


def _rows(seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": i, **{c: rng.choice(vals) for c, (_, vals) in COLS.items()}} for i in range(N)]


# -- SQL's three-valued logic in Python: True, False or None (unknown) ----------------------------------------------
def _and(a, b):
    return False if a is False or b is False else (None if a is None or b is None else True)


def _or(a, b):
    return True if a is True or b is True else (None if a is None or b is None else False)


def _not(a):
    return None if a is None else not a


def _like(value: str, pattern: str) -> bool:
    import re

    return re.fullmatch("".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern), value,
                        re.S) is not None


OPS = {"=": lambda a, b: a == b, "<>": lambda a, b: a != b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
       ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _name(rng: random.Random, col: str) -> str:
    return rng.choice([col, f'"{col}"', f"`{col}`"])


def _lit(rng: random.Random, col: str):
    value = rng.choice([v for v in COLS[col][1] if v is not None] + {"str": ["zz"], "num": [1], "bool": []}[KIND[col]])
    return value, (f"'{value}'" if isinstance(value, str) else str(value).upper() if isinstance(value, bool)
                   else repr(value))


def _leaf(rng: random.Random):
    """A random predicate -> (text, fn(row) -> True/False/None)."""
    col = rng.choice(list(COLS))
    name, kind = _name(rng, col), KIND[col]
    pick = rng.randrange(7)
    if pick == 0:
        neg = rng.random() < .5
        return f"{name} IS {'NOT ' if neg else ''}NULL", lambda r: (r[col] is None) != neg
    if kind == "bool":
        if pick < 3:
            return name, lambda r: r[col]
        value, text = _lit(rng, col)
        op = rng.choice(["=", "<>"])
        return f"{name} {op} {text}", lambda r: None if r[col] is None else OPS[op](r[col], value)
    if pick == 1 and kind == "str":
        pattern, neg = rng.choice(["a%", "_", "%1", "%", "B"]), rng.random() < .5
        return f"{name} {'NOT ' if neg else ''}LIKE '{pattern}'", \
            lambda r: None if r[col] is None else _like(r[col], pattern) != neg
    if pick == 2:
        values = [_lit(rng, col) for _ in range(rng.randint(1, 3))]
        neg = rng.random() < .5
        text = f"{name} {'NOT ' if neg else ''}IN ({', '.join(t for _, t in values)})"
        return text, lambda r: None if r[col] is None else (r[col] in [v for v, _ in values]) != neg
    if pick == 3 and kind == "num":
        (lo, lo_t), (hi, hi_t) = sorted([_lit(rng, col), _lit(rng, col)])
        neg = rng.random() < .5
        return f"{name} {'NOT ' if neg else ''}BETWEEN {lo_t} AND {hi_t}", \
            lambda r: None if r[col] is None else (lo <= r[col] <= hi) != neg
    op = rng.choice(list(OPS))
    others = [c for c in COLS if KIND[c] == kind and c != col]
    if pick == 4 and others:
        other = rng.choice(others)
        return f"{name} {op} {_name(rng, other)}", \
            lambda r: None if r[col] is None or r[other] is None else OPS[op](r[col], r[other])
    value, text = _lit(rng, col)
    return f"{name} {op} {text}", lambda r: None if r[col] is None else OPS[op](r[col], value)


def _filter(rng: random.Random, depth: int = 0):
    """A random filter of predicates joined by AND / OR / NOT (chains of NOT too) -> (text, fn)."""
    if depth >= 3 or rng.random() < 0.3:
        return _leaf(rng)
    pick = rng.randrange(5)
    if pick == 0:
        n = rng.choice([1, 2, 3, 25])
        text, fn = _filter(rng, depth + 1)
        return "NOT " * n + f"({text})", lambda r, fn=fn, n=n: fn(r) if n % 2 == 0 else _not(fn(r))
    (ta, fa), (tb, fb) = _filter(rng, depth + 1), _filter(rng, depth + 1)
    if pick in (1, 2):
        return f"({ta}) AND ({tb})", lambda r: _and(fa(r), fb(r))
    return f"({ta}) OR ({tb})", lambda r: _or(fa(r), fb(r))


@pytest.fixture(scope="module", params=["faiss", "lance"])
def ix(request, tmp_path_factory):
    rows = _rows(19)
    index = create_index(tmp_path_factory.mktemp(request.param) / "ix", dim=8, model="none", backend=request.param)
    meta = pa.table({c: pa.array([r[c] for r in rows], t) for c, (t, _) in COLS.items()})
    index.add_vectors("items", unit_vectors(0, N, 8), meta)
    yield index, rows
    index.close()


def _ids(index, where: str) -> list[int]:
    return sorted(i for rb in index.store.scan("items", ["id"], where=where) for i in rb.column(0).to_pylist())


def test_case_variant_columns_are_each_addressed_exactly(ix):
    index, rows = ix
    for where, want in [("\"Label\" = 'a'", [r["id"] for r in rows if r["Label"] == "a"]),
                        ("label = 'a'", [r["id"] for r in rows if r["label"] == "a"]),
                        ("`Width` = 'x' AND width = 7",
                         [r["id"] for r in rows if r["Width"] == "x" and r["width"] == 7]),
                        ("Flag AND NOT flag", [r["id"] for r in rows if r["Flag"] is True and r["flag"] is False])]:
        assert _ids(index, where) == want, where
        assert index.store.count("items", where) == len(want)
    _, got = index.search_vectors("items", unit_vectors(5, 1, 8), N, where="\"Label\" = 'B'")
    assert sorted(i for i in got[0] if i >= 0) == [r["id"] for r in rows if r["Label"] == "B"]


def test_random_filters_agree_with_python_on_both_backends(ix):
    index, rows = ix
    rng = random.Random(2019)
    checked = 0
    for _ in range(150):
        text, fn = _filter(rng)
        want = [r["id"] for r in rows if fn(r) is True]
        assert _ids(index, text) == want, text
        checked += 1
    assert checked == 150


def test_the_random_filters_are_not_trivial():
    rows, rng = _rows(19), random.Random(2019)
    sizes = [sum(1 for r in rows if _filter(rng)[1](r) is True) for _ in range(150)]
    assert np.mean([0 < s < N for s in sizes]) > 0.5   # most select some rows and not all

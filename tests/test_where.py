"""--where filters: accepted ones give the same rows on DuckDB and Lance as a Python evaluation; attacks are refused."""
import duckdb
import lancedb
import numpy as np
import pyarrow as pa
import pytest

from retrieval.errors import InvalidFilter
from retrieval.store.where import MAX_CHARS, filter_sql, parse_filter
from retrieval.store.where_parse import MAX_DEPTH
from retrieval.store.where_tree import Compare, Pred

ROWS = [  # id, path, width, mtime, label, partial, big
    (0, "a/cat.png", 640, 1.5, "cat", True, 5),
    (1, "b/dog's.png", 320, 2.5, "dog", False, -7),
    (2, "c/100%.png", None, None, None, None, None),
    (3, "d/über_ä.png", 1024, 0.25, "cat", False, 2 ** 40),
    (4, None, 500, 10.0, "bird", True, 0),
]


def _table() -> pa.Table:
    cols = list(zip(*ROWS))
    vec = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(len(ROWS) * 4, np.float32)), 4)
    return pa.table({"id": pa.array(cols[0], pa.int64()), "path": pa.array(cols[1], pa.string()),
                     "width": pa.array(cols[2], pa.int32()), "mtime": pa.array(cols[3], pa.float64()),
                     "label": pa.array(cols[4], pa.string()), "partial": pa.array(cols[5], pa.bool_()),
                     "Big Number": pa.array(cols[6], pa.int64()), "vector": vec,
                     "text_vector": pa.array([None] * len(ROWS), vec.type)})


TABLE = _table()
SCHEMA = TABLE.schema


def row(r):
    return dict(zip(("id", "path", "width", "mtime", "label", "partial", "big"), r))


ACCEPTED = [  # filter, python predicate on a row dict (SQL's NULL rules written out)
    ("width > 500", lambda r: r["width"] is not None and r["width"] > 500),
    ("500 < width", lambda r: r["width"] is not None and r["width"] > 500),
    ("width >= 500 AND label = 'cat'", lambda r: r["width"] is not None and r["width"] >= 500 and r["label"] == "cat"),
    ("label = 'cat' OR label = 'dog'", lambda r: r["label"] in ("cat", "dog")),
    ("label != 'cat'", lambda r: r["label"] is not None and r["label"] != "cat"),
    ("label <> 'cat'", lambda r: r["label"] is not None and r["label"] != "cat"),
    ("NOT (width < 600)", lambda r: r["width"] is not None and not r["width"] < 600),
    ("not width < 600 or LABEL = 'bird'",
     lambda r: (r["width"] is not None and r["width"] >= 600) or r["label"] == "bird"),
    ("(width = 320 OR width = 1024) AND mtime <= 2.5", lambda r: r["width"] in (320, 1024) and r["mtime"] <= 2.5),
    ("id IN (0, 2, 4)", lambda r: r["id"] in (0, 2, 4)),
    ("id IN (2)", lambda r: r["id"] == 2),
    ("label NOT IN ('cat', 'bird')", lambda r: r["label"] is not None and r["label"] not in ("cat", "bird")),
    ("path LIKE '%cat%'", lambda r: r["path"] is not None and "cat" in r["path"]),
    ("path LIKE '_/d%'", lambda r: r["path"] is not None and r["path"][1:3] == "/d"),
    ("path NOT LIKE 'a%'", lambda r: r["path"] is not None and not r["path"].startswith("a")),
    ("path = 'b/dog''s.png'", lambda r: r["path"] == "b/dog's.png"),
    ("path = 'd/über_ä.png'", lambda r: r["path"] == "d/über_ä.png"),
    ("path LIKE '%100%%'", lambda r: r["path"] is not None and "100" in r["path"]),
    ("width BETWEEN 320 AND 640", lambda r: r["width"] is not None and 320 <= r["width"] <= 640),
    ("width NOT BETWEEN 320 AND 640", lambda r: r["width"] is not None and not 320 <= r["width"] <= 640),
    ("mtime BETWEEN 0.1 AND 2", lambda r: r["mtime"] is not None and 0.1 <= r["mtime"] <= 2),
    ("mtime > 1e-1 AND mtime < 1.5E1", lambda r: r["mtime"] is not None and 0.1 < r["mtime"] < 15),
    ("mtime = 10", lambda r: r["mtime"] == 10.0),
    ("mtime < width", lambda r: r["width"] is not None and r["mtime"] < r["width"]),
    ("width IS NULL", lambda r: r["width"] is None),
    ("label IS NOT NULL AND path IS NULL", lambda r: r["label"] is not None and r["path"] is None),
    ("vector IS NOT NULL", lambda r: True),
    ("text_vector IS NOT NULL", lambda r: False),
    ("partial", lambda r: r["partial"] is True),
    ("NOT partial", lambda r: r["partial"] is False),
    ("partial = FALSE", lambda r: r["partial"] is False),
    ("partial != true AND width > 0", lambda r: r["partial"] is False and (r["width"] or 0) > 0),
    ('"Big Number" > -10 AND "Big Number" < 0', lambda r: r["big"] is not None and -10 < r["big"] < 0),
    ("`Big Number` >= 1099511627776", lambda r: r["big"] is not None and r["big"] >= 2 ** 40),
    ("id >= 0 AND (label = 'cat' AND (width > 600 OR (mtime < 1)))",
     lambda r: r["label"] == "cat" and ((r["width"] or 0) > 600 or (r["mtime"] is not None and r["mtime"] < 1))),
    ("  width\t>\n500  ", lambda r: r["width"] is not None and r["width"] > 500),
    ("id IN (" + ",".join(str(i) for i in range(0, 4096, 3)) + ")", lambda r: r["id"] % 3 == 0),
]


def _expected(pred) -> list[int]:
    return sorted(r[0] for r in ROWS if pred(row(r)))


@pytest.fixture(scope="module")
def lance_table(tmp_path_factory):
    return lancedb.connect(str(tmp_path_factory.mktemp("lance"))).create_table("t", TABLE)


@pytest.mark.parametrize("where, pred", ACCEPTED, ids=[w[:40] for w, _ in ACCEPTED])
def test_accepted_filters_select_the_same_rows_on_both_engines(where, pred, lance_table):
    want = _expected(pred)
    tbl = TABLE  # noqa: F841 (DuckDB reads the local Arrow table by name)
    sql = filter_sql(where, SCHEMA, "duckdb")
    assert sorted(duckdb.sql(f"SELECT id FROM tbl WHERE {sql}").fetchnumpy()["id"].tolist()) == want
    got = lance_table.search().where(filter_sql(where, SCHEMA, "lance")).select(["id"]).limit(None).to_arrow()
    assert sorted(got.column("id").to_pylist()) == want


def test_the_tree_and_canonical_text():
    f = parse_filter("500 < WIDTH and label in ('a', 'b''c')", SCHEMA)
    assert f.node.op == "AND" and f.node.args[0] == Compare(">", f.node.args[0].left, f.node.args[0].right)
    assert f.node.args[0].left.name == "width" and f.node.args[0].right.value == 500
    assert isinstance(f.node.args[1], Pred) and f.node.args[1].args[1].value == "b'c"
    assert f.sql("duckdb") == """(("width" > 500) AND ("label" IN ('a', 'b''c')))"""
    assert f.sql("lance") == """((`width` > 500) AND (`label` IN ('a', 'b''c')))"""
    assert filter_sql(None, SCHEMA, "lance") is None and filter_sql("  ", SCHEMA, "duckdb") is None


ATTACKS = [  # issue 14 #1 and friends: each must be refused before any engine sees it
    ("CAST((SELECT string_agg(column0,'|') FROM read_csv('/etc/passwd',header=false,sep='\\x01')) AS INTEGER)=1",
     "functions are not allowed"),
    ("path IN (SELECT file FROM glob('/etc/*'))", "subqueries are not allowed"),
    ("path IN (SELECT * FROM glob('/etc/*'))", "'*' is not allowed"),
    ("starts_with((SELECT content FROM read_text('/etc/hostname')),'X')", "functions are not allowed"),
    ("len(glob('/*')) > 0", "functions are not allowed"),
    ("CAST(path AS INTEGER)=1", "functions are not allowed"),
    ("error('boom')", "functions are not allowed"),
    ("width/0>1", "arithmetic is not allowed"),
    ("width + 1 > 2", "arithmetic is not allowed"),
    ("width - 1 > 2", "arithmetic is not allowed"),
    ("width * 2 > 2", "'*' is not allowed"),
    ("label || 'x' = 'catx'", "concatenation"),
    ("1=1; DROP TABLE images", "';' is not allowed"),
    ("id = 1;", "';' is not allowed"),
    ("id = 1 -- and the rest", "comments are not allowed"),
    ("id = 1 /* x */", "comments are not allowed"),
    ("id = --1", "comments are not allowed"),
    ("1 = 1", "needs a column"),
    ("id = 'abc'", "compare it with a whole number"),
    ("width > 500.5", "compare it with a whole number"),
    ('"width" > -1.5e0', "compare it with a whole number"),
    ("width < mtime * 0", "'*' is not allowed"),
    ("label = width", "cannot be compared"),
    ("width < 10000000000", "outside the range of width"),
    ("id = 99999999999999999999", "out of range"),
    ("mtime > 1e999", "out of range"),
    ("label = 5", "quoted"),
    ("label = \"cat\"", "unknown column 'cat'"),
    ("partial = 1", "TRUE or FALSE"),
    ("partial > FALSE", "compare it with = or !="),
    ("nope = 1", "unknown column 'nope'; the columns are id, path, width"),
    ("vector = 1", "allows only IS NULL"),
    ("text_vector LIKE 'a'", "allows only IS NULL"),
    ("width LIKE '5%'", "LIKE needs a text column"),
    ("path LIKE 'a\\%'", "backslash"),
    ("path LIKE 'a' ESCAPE '!'", "unexpected 'ESCAPE'"),
    ("width = NULL", "IS NULL"),
    ("width IN ()", "expected a column or value"),
    ("width IN (1, 'a')", "whole number"),
    ("width IN (id)", "expected a value here"),
    ("label = 'cat", "not closed"),
    ('"label = 1', "not closed"),
    ("width >", "ends where a column or value was expected"),
    ("(width > 1", "expected ')'"),
    ("width > 1)", "unexpected ')'"),
    ("width > 1 label = 'x'", "unexpected 'label'"),
    ("width IS 5", "IS must be followed by NULL"),
    ("AND width > 1", "expected a column or value"),
    ("width BETWEEN 1 OR 2", "BETWEEN needs"),
    ("label = 'a' UNION SELECT 1", "unexpected 'UNION'"),
    ("label = 'cat' ＯＲ 1=1", "U+FF2F"),
    ("label ＝ 'cat'", "U+FF1D"),
    ("label\u200b = 'cat'", "U+200B"),
    ("label = 'cat'\u202e", "U+202E"),
    ("label\u00a0= 'cat'", "U+00A0"),
    ("ｌabel = 'cat'", "U+FF4C"),
    ("label = 'ca\x00t'", "U+0000"),
    ("label = '\ud800'", "U+D800"),
    ("width > ٥", "U+0665"),
    ("@x = 1", "'@'"),
    ("$1 = 1", "'$'"),
    ("(" * (MAX_DEPTH + 5) + "width > 1" + ")" * (MAX_DEPTH + 5), "nested more than"),
    ("NOT " * (MAX_DEPTH + 5) + "partial", "nested more than"),
    ("width > 1 OR " * (MAX_CHARS // 10) + "width > 1", "characters long"),
]


@pytest.mark.parametrize("where, why", ATTACKS, ids=[a[:40] for a, _ in ATTACKS])
def test_attacks_and_mistakes_are_refused_with_one_line(where, why):
    with pytest.raises(InvalidFilter) as err:
        filter_sql(where, SCHEMA, "duckdb")
    msg = str(err.value)
    assert why in msg and "\n" not in msg and len(msg) < 600
    assert msg.startswith("bad --where filter")


def test_non_text_filters_are_refused():
    with pytest.raises(InvalidFilter, match="must be text"):
        parse_filter(5, SCHEMA)


def test_long_but_legal_id_lists_pass():
    ids = ",".join(str(2 ** 62 + i) for i in range(4096))  # the longest list the library itself sends
    assert filter_sql(f"(label = 'cat') AND id IN ({ids})", SCHEMA, "lance").count(",") == 4095

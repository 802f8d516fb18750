"""Issue 19 #9: filters reach the engines in normal form (no chains of NOT, AND/OR flattened) and bounded in size.

Before, a chain of NOTs went to Lance as written: about two dozen were refused by its parser and 40 took it
exponential time (76 s on one core here) while four such requests starved every other search."""
import lancedb
import pyarrow as pa
import pytest

from retrieval.errors import InvalidFilter
from retrieval.store.where import filter_sql, parse_filter
from retrieval.store.where_tree import MAX_LEVELS, MAX_NODES, Logic, Pred, count_nodes, levels, normal_form

X = [0, 1, 2, 3, None, 5, 6, 7]
S = ["a", "b", None, "ab", "b", "c", "a", None]
TABLE = pa.table({"id": pa.array(range(8), pa.int64()), "x": pa.array(X, pa.int64()), "s": pa.array(S),
                  "b": pa.array([True, False, None, True, False, True, None, False])})


def _nots_over_nots(node) -> int:
    """NOT nodes whose argument is not a predicate (a NOT, an AND, an OR)."""
    if not isinstance(node, Logic):
        return 0
    own = int(node.op == "NOT" and isinstance(node.args[0], Logic))
    return own + sum(_nots_over_nots(a) for a in node.args)


@pytest.fixture(scope="module")
def lance_table(tmp_path_factory):
    return lancedb.connect(str(tmp_path_factory.mktemp("lance"))).create_table("t", TABLE)


def _lance_ids(table, where: str) -> list[int]:
    got = table.search().where(filter_sql(where, TABLE.schema, "lance")).select(["id"]).limit(None).to_arrow()
    return sorted(got.column("id").to_pylist())


def test_a_chain_of_nots_reaches_the_engine_as_at_most_one_not():
    for n in (2, 3, 40, 41, 60):
        f = parse_filter("NOT " * n + "x > 1", TABLE.schema)
        assert f.sql("lance").count("NOT") == n % 2 and levels(f.node) == n % 2
        m = min(n, 31)   # "NOT (" nests twice: 31 of them stay within the parser's 64 levels
        f = parse_filter("NOT (" * m + "s LIKE 'a%'" + ")" * m, TABLE.schema)
        assert f.node == Pred("LIKE", f.node.col, f.node.args, negated=bool(m % 2))   # folded into the predicate


def test_de_morgan_pushes_nots_down_and_flattens():
    f = parse_filter("NOT (x > 1 AND NOT (s = 'a' OR NOT b)) AND (x < 5 AND (s IS NULL AND b))", TABLE.schema)
    assert _nots_over_nots(f.node) == 0 and f.node.op == "AND" and len(f.node.args) == 4
    assert f.node.args[0].op == "OR" and len(f.node.args[0].args) == 3   # NOT x>1 OR s='a' OR NOT b
    assert f.sql("duckdb") == ('(((NOT ("x" > 1)) OR ("s" = \'a\') OR (NOT ("b" = TRUE))) AND ("x" < 5) AND '
                               '("s" IS NULL) AND ("b" = TRUE))')


@pytest.mark.parametrize("n", [25, 26, 40])
def test_long_not_chains_select_the_right_rows_on_lance(lance_table, n):
    odd = n % 2 == 1
    want = [i for i, x in enumerate(X) if x is not None and ((x <= 1) if odd else (x > 1))]
    assert _lance_ids(lance_table, "NOT " * n + "x > 1") == want
    want = [i for i, (x, s) in enumerate(zip(X, S)) if (x is not None and x > 5) or (s is not None and
                                                                                     (s != "a") == odd)]
    assert _lance_ids(lance_table, "x > 5 OR " + "NOT " * n + "s = 'a'") == want


def test_normal_form_keeps_three_valued_logic_on_both_engines(lance_table):
    import duckdb

    tbl = TABLE  # noqa: F841 (DuckDB reads the local Arrow table by name)
    for where, want in [("NOT (x > 1 AND s = 'a')", [0, 1, 3, 4, 5]),       # NULL AND FALSE is FALSE
                        ("NOT (x > 1 OR s = 'a')", [1]),                     # NULL rows stay out
                        ("NOT NOT (s NOT IN ('a'))", [1, 3, 4, 5]),
                        ("NOT (x NOT BETWEEN 2 AND 5)", [2, 3, 5]),
                        ("NOT (s IS NOT NULL AND NOT b)", [0, 2, 3, 5, 7])]:
        sql = filter_sql(where, TABLE.schema, "duckdb")
        assert sorted(duckdb.sql(f"SELECT id FROM tbl WHERE {sql}").fetchnumpy()["id"].tolist()) == want, where
        assert _lance_ids(lance_table, where) == want, where


def test_filters_too_large_for_the_engines_are_refused_with_one_line():
    wide = " OR ".join(f"x = {i}" for i in range(MAX_NODES))
    with pytest.raises(InvalidFilter, match=f"at most {MAX_NODES:,}") as err:
        parse_filter(wide, TABLE.schema)
    assert "\n" not in str(err.value) and str(err.value).startswith("bad --where filter")
    assert count_nodes(parse_filter(" OR ".join(f"x = {i}" for i in range(MAX_NODES - 1)), TABLE.schema).node) \
        == MAX_NODES
    deep = "x = 0"
    for i in range(MAX_LEVELS + 1):
        deep = f"({deep}) {'AND' if i % 2 else 'OR'} NOT x = {i}"
    with pytest.raises(InvalidFilter, match=f"at most {MAX_LEVELS} are allowed"):
        parse_filter(deep, TABLE.schema)


def test_the_deepest_and_widest_filters_allowed_run_on_lance(lance_table):
    deep = "x = 0"
    for i in range(MAX_LEVELS - 2):
        deep = f"({deep}) {'AND' if i % 2 else 'OR'} NOT x = {i % 7}"
    assert levels(parse_filter(deep, TABLE.schema).node) == MAX_LEVELS - 1
    _lance_ids(lance_table, deep)   # parsed and run, not refused by Lance's parser
    assert _lance_ids(lance_table, " OR ".join(f"x = {i}" for i in range(MAX_NODES - 1))) == [0, 1, 2, 3, 5, 6, 7]


def test_normal_form_is_a_pure_function_of_the_tree():
    f = parse_filter("x > 1", TABLE.schema)
    twice = Logic("NOT", (Logic("NOT", (f.node,)),))
    assert normal_form(twice) == f.node and normal_form(f.node, negate=True) == Logic("NOT", (f.node,))

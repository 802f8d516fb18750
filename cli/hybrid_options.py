"""``clipdex search``'s words-and-pictures options: ``--mode``, ``--weights``, ``--fusion``, ``--explain``, query
arithmetic (``beach + sunset:0.5 - people``, ``--add``, ``--subtract``), and the run through
``retrieval.query.hybrid``."""
from __future__ import annotations

import functools

import click
import pyarrow as pa

from retrieval.errors import InvalidInput
from retrieval.index.fulltext import OCR_TABLE
from retrieval.query.arithmetic import parse_parts
from retrieval.query.hybrid import DEFAULT_FUSION, FUSIONS, MODES, HybridOptions, hybrid_search


def parse_weights(value: str | None) -> tuple[float, float]:
    """``--weights V,T`` -> (vector, keyword) weights."""
    if value is None:
        return (1.0, 1.0)
    parts = value.split(",")
    try:
        w = tuple(float(p) for p in parts)
    except ValueError:
        w = ()
    if len(w) != 2:
        raise InvalidInput(f"--weights {value!r}: give two numbers, the vector and the keyword weight, e.g. 1,0.5")
    return w  # type: ignore[return-value]


def hybrid_options(f):
    """The words-and-pictures options of ``clipdex search``."""
    opts = [
        click.option("--mode", type=click.Choice(MODES), default="auto", show_default=True,
                     help="vector: by what the picture shows; text: by the words it carries (paths, captions, "
                          "metadata, OCR); hybrid: both, fused. auto: hybrid on an index indexed with --ocr."),
        click.option("--weights", default=None, metavar="V,T",
                     help="Weights of the vector and the keyword ranking in hybrid mode (default 1,1)."),
        click.option("--fusion", type=click.Choice(FUSIONS), default=DEFAULT_FUSION, show_default=True,
                     help="complete: reciprocal-rank fusion (k=60) with the keyword hits that carry every query "
                          "word first (when only some do); rrf: plain reciprocal-rank fusion; score: weighted "
                          "min-max scaled scores."),
        click.option("--explain", is_flag=True,
                     help="Say why each hit matched: vector score and rank, keyword score, rank and matched "
                          "words, OCR snippet."),
        click.option("--add", "add", multiple=True, metavar="IMAGE|TEXT[:W]",
                     help="Add a term to the query (an image file, or a text), optional weight after ':'."),
        click.option("--subtract", "subtract", multiple=True, metavar="TEXT|IMAGE[:W]",
                     help="Take a term away from the query (a text, or an image file), optional weight after ':'."),
    ]
    return functools.reduce(lambda g, o: o(g), reversed(opts), f)


def wants_hybrid(ix, parts: tuple[str, ...], mode: str, explain: bool, add, subtract, tuned: bool = False) -> bool:
    """Whether a search goes through the hybrid path (else the plain vector search, unchanged); ``tuned``: weights
    or a fusion were given."""
    if explain or add or subtract or tuned or mode in ("text", "hybrid"):
        return True
    if parts and parse_parts(list(parts)) is not None:
        return True
    return mode == "auto" and bool(parts) and ix.store.has_table(OCR_TABLE)


def query_string(parts: tuple[str, ...]) -> str | None:
    """The CLI's query words as one query string (arithmetic in its quoted form)."""
    if not parts:
        return None
    terms = parse_parts(list(parts))
    if terms is None:
        return parts[0] if len(parts) == 1 else " ".join(parts)
    if any('"' in str(t.value) for t in terms):
        raise InvalidInput("query arithmetic terms cannot contain double quotes")
    return " ".join(f'{"+" if t.sign > 0 else "-"} "{t.value}:{t.weight!r}"' for t in terms).removeprefix("+ ")


def run_hybrid(ix, parts, image, k, table, where, min_score, encoder, long_text, mode, weights, fusion, explain,
               add, subtract) -> pa.Table:
    if mode == "auto" and (weights is not None or fusion != DEFAULT_FUSION):
        mode = "hybrid"  # weights and a fusion only mean something for a fused ranking
    options = HybridOptions(mode=mode, weights=parse_weights(weights), fusion=fusion, explain=explain)
    return hybrid_search(ix, query_string(parts), image=image, add=add, subtract=subtract, k=k, table=table,
                         where=where, min_score=min_score, long_text=long_text, encoder=encoder, options=options)


def for_people(result: pa.Table) -> pa.Table:
    """The human table: matched words as one comma-separated cell."""
    if "matched" in result.column_names:
        i = result.column_names.index("matched")
        joined = pa.array([", ".join(m or []) for m in result.column("matched").to_pylist()], pa.string())
        result = result.set_column(i, "matched", joined)
    return result

"""docs/ALGORITHMS.md stays true: every function it names exists where it says, the defaults it quotes are the
code's, and every mention of ALGORITHMS.md in the project points at it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import ROOT

DOC = ROOT / "docs" / "ALGORITHMS.md"
SOURCES = ("README.md", "retrieval", "indexers", "cli", "clipdex", "tests", "benchmarks", "docs", "notebooks")


def _top_level_names(path) -> set[str]:
    """Names a module defines at its top level (functions, classes, assignments), read without importing it."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _references(text: str) -> list[tuple[str, str]]:
    """(module path, name) for every `path.py::name` in the text; a bare `::name` belongs to the last path named."""
    refs, last = [], None
    for path, name in re.findall(r"((?:[\w-]+/)+[\w-]+\.py)?::(\w+)", text):
        last = path or last
        assert last is not None, f"::{name} comes before any module path"
        refs.append((last, name))
    return refs


def test_every_function_the_doc_names_exists():
    refs = _references(DOC.read_text(encoding="utf-8"))
    assert len(refs) > 40  # the doc names the implementing function of every method
    missing = [f"{p}::{n}" for p, n in refs if not (ROOT / p).is_file() or n not in _top_level_names(ROOT / p)]
    assert not missing, f"docs/ALGORITHMS.md names functions that do not exist: {missing}"


def test_reference_parser_catches_a_wrong_name():
    assert _references("`a/b.py::f`, `::g` and `c/d.py::h`") == [("a/b.py", "f"), ("a/b.py", "g"), ("c/d.py", "h")]
    assert "tipx_logits" in _top_level_names(ROOT / "retrieval/algorithms/tipx.py")
    assert "tipx_logit" not in _top_level_names(ROOT / "retrieval/algorithms/tipx.py")


def test_the_defaults_the_doc_quotes_are_the_code_defaults():
    from retrieval.algorithms import proker, susx, tip_adapter, tipx, xmore
    from retrieval.ann.plan import CONFIDENCE_Z
    from retrieval.classify.prepare import GDA_ALPHA, ClassifyOptions
    from retrieval.encode.text import CLIP_WINDOW, DEFAULT_OVERLAP
    from retrieval.query.video import VideoSearchOptions

    doc = " ".join(DOC.read_text(encoding="utf-8").split())
    video, opts = VideoSearchOptions(), ClassifyOptions()
    quoted = [
        f"α = {tip_adapter.DEFAULT_ALPHA}, β = {tip_adapter.DEFAULT_BETA:g}",
        f"α = {tipx.DEFAULT_TIPX['alpha']:g}, β = {tipx.DEFAULT_TIPX['beta']:g}, γ = {tipx.DEFAULT_TIPX['gamma']}",
        f"τ = {tipx.DEFAULT_TEMPERATURE}",
        f"`per_class` = {susx.DEFAULT_PER_CLASS}", f"≥ {susx.DEFAULT_DEDUP_IP}",
        f"K = {xmore.DEFAULT_K}", f"`retrieve` = {xmore.DEFAULT_RETRIEVE}",
        f"k = {opts.reco_k}, w = {opts.reco_weight}",
        f"α = {GDA_ALPHA:g} without a labelled split",
        f"β = {proker.DEFAULT_BETA}, λ = {proker.DEFAULT_LAMBDA}",
        f'`pool = "{video.pool}"`, α = {video.alpha}', f"τ = {video.tau}", f"`candidates` = {video.candidates}",
        f"w = {CLIP_WINDOW} tokens", f"o = {DEFAULT_OVERLAP} overlapping tokens",
        f"z = {CONFIDENCE_Z}",
    ]
    assert not [q for q in quoted if q not in doc], [q for q in quoted if q not in doc]


def test_every_mention_of_algorithms_md_points_at_docs():
    assert DOC.is_file()
    wrong = []
    for top in SOURCES:
        paths = [ROOT / top] if (ROOT / top).is_file() else sorted((ROOT / top).rglob("*"))
        for path in paths:
            if path.suffix not in (".py", ".md", ".ipynb") or not path.is_file() or path == Path(__file__):
                continue
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(r"(?<!docs/)(?<![\w/])ALGORITHMS\.md", line):
                    wrong.append(f"{path.relative_to(ROOT)}:{i}")
    assert not wrong, f"ALGORITHMS.md cited without its folder (docs/ALGORITHMS.md): {wrong}"


@pytest.mark.parametrize("line, bad", [("see ALGORITHMS.md", True), ("see docs/ALGORITHMS.md", False),
                                       ("[x](docs/ALGORITHMS.md)", False), ("(ALGORITHMS.md section 5)", True)])
def test_the_mention_pattern(line, bad):
    assert bool(re.search(r"(?<!docs/)(?<![\w/])ALGORITHMS\.md", line)) is bad

"""The shape of the code: layers only point down, no import cycles, imports at module top, modules stay small.

The layer order is the import-linter contract in pyproject.toml (``lint-imports`` runs it on its own too).
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("clipdex", "retrieval", "indexers", "cli")
MAX_LINES = 400
# The same limit measured in syntax, so that it cannot be met by packing code onto fewer lines: a module's code
# (its AST nodes, docstrings left out) may not exceed what MAX_LINES lines hold at 5.6 nodes a line, a little above
# the median module's density (5.3 a line; a long line of several statements or a squeezed table holds 15 or more).
MAX_NODES = 2_250

# A function may import these lazily (with a comment saying why): heavy or optional dependencies whose import
# cost or absence must not reach every command.
LAZY_OK = {"torch", "torchvision", "open_clip", "av", "ray", "lancedb", "duckdb", "faiss", "huggingface_hub",
           "safetensors", "matplotlib", "pandas", "fastapi", "uvicorn", "starlette", "webdataset", "onnxruntime",
           "lance", "pyarrow.dataset", "imagehash", "scipy", "rapidocr_onnxruntime", "cv2"}


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path


def _function_imports(tree: ast.AST):
    """Every import statement nested inside a function body."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    yield inner


def _names(node) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""] if node.level == 0 else ["." * node.level + (node.module or "")]
    return [a.name for a in node.names]


def test_the_layer_contract_holds():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is part of the dev extra"
    out = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                cycles.append(f"{module} <-> {imported}")
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_imports_sit_at_module_top_unless_a_heavy_dependency_justifies_a_lazy_one():
    bad = []
    for path in _modules():
        text = path.read_text()
        lines = text.splitlines()
        for node in _function_imports(ast.parse(text)):
            rel = path.relative_to(ROOT)
            for name in _names(node):
                top = name.split(".")[0]
                heavy = name in LAZY_OK or top in LAZY_OK
                # the CLI may defer its own command implementations so that `clipdex --help` stays fast, and a
                # package's lazy attribute (__getattr__) may defer a submodule that needs a heavy dependency
                cli_deferral = top in PACKAGES and (rel.parts[0] == "cli" or path.name == "__init__.py")
                commented = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
                if not ((heavy or cli_deferral) and commented):
                    bad.append(f"{rel}:{node.lineno} imports {name} inside a function"
                               + ("" if commented else " (no comment)"))
    assert not bad, "\n".join(bad)


def test_no_module_grows_past_the_size_a_reader_can_hold():
    big = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, big


def code_size(text: str) -> int:
    """The AST nodes of a module's code: statements, expressions, names, literals; not docstrings and not the
    bare operator and context markers. Line breaks, spacing and comments do not change it."""
    tree = ast.parse(text)
    markers = (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                docstrings.update((id(first), id(first.value)))
    return sum(1 for n in ast.walk(tree) if not isinstance(n, markers) and id(n) not in docstrings)


def test_no_module_packs_more_code_than_its_lines_should_hold():
    """The line limit cannot be met by squeezing: wrapping a module onto fewer lines leaves its size here as it
    was, so a module too big for MAX_LINES ordinary lines must be split by concern."""
    big = {str(p.relative_to(ROOT)): n for p in _modules() if (n := code_size(p.read_text())) > MAX_NODES}
    assert not big, big


def test_code_size_ignores_layout_and_documentation():
    packed = 'def f(a, b):\n    """Doc."""\n    return {"x": [a, b], "y": a if b else -b}  # note\n'
    spread = 'def f(a, b):\n    return {\n        "x": [\n            a,\n            b,\n        ],\n' \
             '        "y": a if b else -b,\n    }\n'
    assert code_size(packed) == code_size(spread) > 10
    assert code_size(packed + "g = f(1, 2)\n") > code_size(packed)


def _is_logger(value: ast.expr) -> bool:
    """``logging.getLogger(...)`` or ``getLogger(...)``."""
    func = value.func if isinstance(value, ast.Call) else None
    return (isinstance(func, ast.Attribute) and func.attr == "getLogger") or (
        isinstance(func, ast.Name) and func.id == "getLogger")


def _is_command(decorator: ast.expr) -> bool:
    """``@click.command(...)``, ``@click.group(...)`` or ``@some_group.command(...)``."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr in ("command", "group")


def test_one_name_for_module_loggers_and_for_command_modules():
    """A module's logger is ``log`` (never ``logger``), and a CLI module that defines commands is ``*_cmd.py``
    (``cli/main.py``, which builds the top-level groups and registers the rest, aside)."""
    bad = []
    for path in _modules():
        rel = path.relative_to(ROOT)
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and _is_logger(node.value):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                if names != ["log"]:
                    bad.append(f"{rel}:{node.lineno} names its logger {', '.join(names) or '?'}, not log")
        if rel.parts[0] == "cli" and path.name != "main.py" and not path.name.endswith("_cmd.py"):
            functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            commands = [f.name for f in functions if any(_is_command(d) for d in f.decorator_list)]
            if commands:
                bad.append(f"{rel} defines the commands {', '.join(commands)}: name it *_cmd.py")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("layer_break", ["retrieval/algorithms/arrays.py"])
def test_the_contract_catches_an_upward_import(tmp_path, layer_break):
    """The check can fail: a copy of the tree where the bottom layer imports the CLI is refused."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    copy = tmp_path / "tree"
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, copy / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    target = copy / layer_break
    target.write_text(target.read_text() + "\nimport cli.main  # noqa\n")
    env = {"PYTHONPATH": str(copy), "PATH": str(Path(sys.executable).parent)}
    out = subprocess.run([exe, "--config", str(copy / "pyproject.toml"), "--no-cache"], cwd=copy,
                         capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "retrieval.algorithms" in out.stdout


def test_the_linter_passes():
    """ruff (pyflakes, pycodestyle, import order, bugbear; 120 columns) over the whole tree, as configured in
    pyproject.toml."""
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert exe, "ruff is part of the dev extra"
    out = subprocess.run([exe, "check", "--no-cache", str(ROOT)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_the_library_and_the_indexers_never_import_the_web_framework():
    """The HTTP service is an application (clipdex.serve), above the library: nothing under retrieval/ or
    indexers/ imports fastapi, starlette or uvicorn, even lazily."""
    web = {"fastapi", "starlette", "uvicorn"}
    bad = []
    for path in _modules():
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in ("retrieval", "indexers"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bad += [f"{rel}:{node.lineno} {n}" for n in _names(node) if n.split(".")[0] in web]
    assert not bad, bad

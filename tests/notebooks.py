"""The notebooks are stored with their outputs, so that they read on GitHub without running; a test executes each
one and fails when its stored outputs are stale.

Stale means: re-executing a notebook changes what a reader sees as text (a printed line, a table, an error) or
moves a picture to another cell. Text outputs are compared after normalisation: memory addresses and temporary
paths are masked, trailing spaces dropped, and decimal numbers may differ by two units in their last printed digit
(float32 sums differ in the last bits between BLAS builds). Pictures are compared by presence only, cell by cell:
the PNG bytes matplotlib writes change with its version, fonts and freetype, so pixel equality would fail on an
honest machine; what a picture shows is asserted through the numbers printed beside it.

Refresh the stored outputs after changing a notebook or what it shows (a few seconds to a minute each):

    python -m tests.notebooks                      # every notebook under notebooks/
    python -m tests.notebooks quickstart.ipynb     # one
"""
from __future__ import annotations

import math
import os
import re
import sys

from tests.helpers import ROOT

NOTEBOOKS = ROOT / "notebooks"

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_TMP = re.compile(r"(/tmp|/var/folders|/private/var)/[^\s'\"),\]]*")
_NUMBER = re.compile(r"-?\d+\.\d+(?:[eE][-+]?\d+)?")


def execute(name: str, timeout: int = 300, cwd: str | os.PathLike | None = None):
    """notebooks/<name> executed top to bottom in a python3 kernel (this checkout first on PYTHONPATH, matplotlib's
    inline backend whatever MPLBACKEND says), without timing metadata. A failing cell raises
    ``nbclient.exceptions.CellExecutionError``. Returns the executed notebook (the file is not touched)."""
    import nbclient  # optional dev dependencies: only the notebook tests and the refresh need them
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           # tqdm.auto (imported by huggingface_hub) warns in a kernel when ipywidgets is missing: a fact about the
           # machine, not about the notebook, that would make the stored outputs depend on where they were made
           "PYTHONWARNINGS": ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore:IProgress not found"]))}
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "MPLBACKEND", "PYTHONWARNINGS")}
    os.environ.update(env)
    os.environ.pop("MPLBACKEND", None)
    try:
        nbclient.NotebookClient(nb, kernel_name="python3", timeout=timeout, record_timing=False,
                                resources={"metadata": {"path": str(cwd or ROOT)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    nb.metadata.get("language_info", {}).pop("version", None)  # the kernel's Python patch level is not an output
    return nb


def outputs(nb) -> list[list[dict]]:
    """The outputs of each code cell, in order."""
    return [list(c.get("outputs", [])) for c in nb.cells if c.cell_type == "code"]


def all_text(nb) -> str:
    """Every text output of the notebook joined (streams and text/plain results), for assertions on content."""
    return "\n".join(_text(o) for cell in outputs(nb) for o in cell)


def _text(o: dict) -> str:
    if o.get("output_type") == "stream":
        return o.get("text", "")
    if o.get("output_type") == "error":
        return f"{o.get('ename')}: {o.get('evalue')}"
    return o.get("data", {}).get("text/plain", "")


def normalise(text: str) -> str:
    text = _TMP.sub("<tmp>", _ADDRESS.sub("0x?", text))
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def _places(number: str) -> int:
    return len(re.split("[eE]", number)[0].split(".")[1])


def _numbers_agree(a: str, b: str) -> bool:
    if "e" in a.lower() or "e" in b.lower():
        return math.isclose(float(a), float(b), rel_tol=1e-3)
    return abs(float(a) - float(b)) <= 2 * 10.0 ** -min(_places(a), _places(b)) + 1e-12


def texts_agree(stored: str, fresh: str) -> bool:
    """Equal after :func:`normalise`, decimal numbers up to two units in their last printed digit."""
    a, b = normalise(stored), normalise(fresh)
    if _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
        return False
    return all(_numbers_agree(x, y) for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b)))


def _cell_view(cell: list[dict]) -> tuple[str, bool]:
    """What a reader sees of one cell: its text (streams merged per name, results' text/plain) and whether it
    shows a picture."""
    streams: dict[str, str] = {}
    parts = []
    for o in cell:
        if o.get("output_type") == "stream":
            streams[o.get("name", "stdout")] = streams.get(o.get("name", "stdout"), "") + o.get("text", "")
        else:
            parts.append(_text(o))
    text = "\n".join([*(f"[{k}]\n{v}" for k, v in sorted(streams.items())), *parts])
    return text, any("image/png" in o.get("data", {}) for o in cell)


def stale_outputs(stored_nb, fresh_nb) -> list[str]:
    """How the fresh execution differs from the stored outputs, one line per code cell that changed."""
    old, new = outputs(stored_nb), outputs(fresh_nb)
    if len(old) != len(new):
        return [f"{len(old)} code cells stored, {len(new)} executed"]
    problems = []
    for i, (a, b) in enumerate(zip(old, new)):
        (ta, pa), (tb, pb) = _cell_view(a), _cell_view(b)
        if not texts_agree(ta, tb):
            problems.append(f"code cell {i}: stored text\n{normalise(ta)}\n--- now\n{normalise(tb)}")
        if pa != pb:
            problems.append(f"code cell {i}: a picture {'was' if pa else 'was not'} stored, "
                            f"{'none' if pa else 'one'} now")
    return problems


def check_notebook(name: str, tmp_path, timeout: int = 300):
    """Execute notebooks/<name> in ``tmp_path`` and fail when it errs or its stored outputs are stale (the message
    says how to refresh them). Returns the executed notebook for further assertions."""
    import nbformat

    stored = nbformat.read(NOTEBOOKS / name, as_version=4)
    fresh = execute(name, timeout=timeout, cwd=tmp_path)
    errors = [o for cell in outputs(fresh) for o in cell if o.get("output_type") == "error"]
    assert not errors, errors
    assert any(o for cell in outputs(stored) for o in cell), f"{name} is stored without outputs"
    problems = stale_outputs(stored, fresh)
    assert not problems, (f"the stored outputs of notebooks/{name} are stale; refresh them with "
                          f"`python -m tests.notebooks {name}`:\n" + "\n".join(problems))
    return fresh


def refresh(name: str, timeout: int = 600) -> None:
    """Execute notebooks/<name> and store it with its outputs (run from any folder; a temporary cwd is used)."""
    import tempfile

    import nbformat

    with tempfile.TemporaryDirectory() as cwd:
        nb = execute(name, timeout=timeout, cwd=cwd)
    nbformat.write(nb, NOTEBOOKS / name)


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    for n in names:
        refresh(n)
        print(f"stored the outputs of notebooks/{n}")

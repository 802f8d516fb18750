"""The classification notebook is executed (tiny model, generated images), so it cannot rot."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_classification_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.chdir(ROOT)
    nb = nbformat.read(ROOT / "notebooks" / "classification.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "susx: support set of" in text and "label: circle" in text
    assert "classified 6 images with susx" in text  # the CLI cell ran (6 stars)

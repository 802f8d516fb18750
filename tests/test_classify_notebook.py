"""The classification notebook is executed (tiny model, generated images), so it cannot rot."""
import pytest

from tests.helpers import ROOT, execute_notebook, notebook_text


@pytest.mark.slow
def test_classification_notebook_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    outputs = execute_notebook("classification.ipynb", monkeypatch, timeout=300)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = notebook_text(outputs)
    assert "susx: support set of" in text and "label: circle" in text
    assert "classified 6 images with susx" in text  # the CLI cell ran (6 stars)

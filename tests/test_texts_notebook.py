"""notebooks/long_text.ipynb runs top to bottom (its cells assert what they show)."""
import pytest

from tests.helpers import execute_notebook, notebook_text


@pytest.mark.slow
def test_long_text_notebook_executes(monkeypatch):
    outputs = notebook_text(execute_notebook("long_text.ipynb", monkeypatch, timeout=300))
    assert "200 tokens, strategy chunk: 4 windows of 75 pooled" in outputs

"""notebooks/long_text.ipynb runs top to bottom (its cells assert what they show) and its stored outputs are the
ones it produces (tests/notebooks.py)."""
import pytest

from tests.notebooks import all_text, check_notebook


@pytest.mark.slow
def test_long_text_notebook_runs_and_its_stored_outputs_are_current(tmp_path):
    pytest.importorskip("nbclient")
    text = all_text(check_notebook("long_text.ipynb", tmp_path, timeout=300))
    assert "strategy chunk: 3 windows of 75 pooled" in text and "TRUNCATED to 75" in text
    assert "{'rows': 6, 'encoded': 5, 'reused': 1, 'long': 1, 'chunked': 1}" in text

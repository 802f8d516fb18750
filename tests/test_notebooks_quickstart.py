"""notebooks/quickstart.ipynb runs top to bottom (its cells assert what they show) and its stored outputs are the
ones it produces (tests/notebooks.py)."""
import pytest

from tests.notebooks import all_text, check_notebook


@pytest.mark.slow
def test_quickstart_notebook_runs_and_its_stored_outputs_are_current(tmp_path):
    pytest.importorskip("nbclient")
    text = all_text(check_notebook("quickstart.ipynb", tmp_path, timeout=180))
    assert "first run: added 48, errors 0" in text and "second run: added 0, unchanged 48" in text
    assert "['star/red_0.png', 'star/red_1.png'" in text  # the filter keeps stars, and the red ones come first

"""notebooks/classification.ipynb runs top to bottom (tiny model, generated drawings) and its stored outputs are the
ones it produces (tests/notebooks.py)."""
import pytest

from tests.notebooks import all_text, check_notebook


@pytest.mark.slow
def test_classification_notebook_runs_and_its_stored_outputs_are_current(tmp_path):
    pytest.importorskip("nbclient")
    text = all_text(check_notebook("classification.ipynb", tmp_path, timeout=300))
    assert "support index: 96 captioned drawings" in text
    for method in ("zeroshot", "susx", "xmore", "reco", "tip", "tipx", "gda", "proker"):
        assert f"\n{method} " in text  # a row of the accuracy table

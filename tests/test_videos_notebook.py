"""notebooks/video_search.ipynb runs top to bottom (its cells assert what they show) and its stored outputs are the
ones it produces (tests/notebooks.py)."""
import pytest

from tests.notebooks import all_text, check_notebook


@pytest.mark.slow
def test_video_search_notebook_runs_and_its_stored_outputs_are_current(tmp_path):
    pytest.importorskip("av")
    pytest.importorskip("nbclient")
    text = all_text(check_notebook("video_search.ipynb", tmp_path, timeout=180))
    assert "audio only" in text and "partial, kept" in text
    assert "'a purple heart'   -> heart.mp4" in text and "'a yellow circle'  -> recolor.mp4" in text

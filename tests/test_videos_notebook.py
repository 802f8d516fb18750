"""notebooks/video_search.ipynb runs top to bottom (its cells assert what they show)."""
import pytest

from tests.helpers import execute_notebook, notebook_text


@pytest.mark.slow
def test_video_search_notebook_executes(monkeypatch):
    pytest.importorskip("av")
    outputs = notebook_text(execute_notebook("video_search.ipynb", monkeypatch, timeout=120))
    assert "found a_clip.mp4 at 3.0 s" in outputs
    assert "audio only" in outputs and "partial, kept" in outputs

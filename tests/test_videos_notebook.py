"""notebooks/video_search.ipynb runs top to bottom (its cells assert what they show)."""
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "video_search.ipynb"


def test_video_search_notebook_executes():
    pytest.importorskip("av")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent.parent)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "found a_clip.mp4 at 3.0 s" in outputs
    assert "audio only" in outputs and "partial, kept" in outputs

"""The quickstart notebook is executed, so it cannot rot."""
import pytest

from tests.helpers import execute_notebook


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    outputs = execute_notebook("quickstart.ipynb", monkeypatch, timeout=180, cwd=tmp_path)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the thumbnail grid was not drawn"

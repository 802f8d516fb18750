"""`clipdex serve` from the command line: bad start-up options are one line; a real server answers on loopback
with its token."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from tests.serve_helpers import build_photo_index, start_server  # noqa: E402


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "--token TOKEN"),
    (["--port", "0"], "--port must be between"),
    (["--max-megapixels", "0"], "--max-megapixels"),
])
def test_serve_refuses_bad_options_in_one_line(runner, cli, tmp_path, args, message):
    r = runner.invoke(cli, ["serve", str(tmp_path / "x.clipdex"), *args])
    assert r.exit_code == 1 and r.output.strip().splitlines() == [r.output.strip()] and message in r.output


def test_serve_names_a_missing_index_in_one_line(runner, cli, tmp_path):
    r = runner.invoke(cli, ["serve", str(tmp_path / "missing.clipdex")])
    assert r.exit_code == 1 and r.output.startswith("error: ") and "does not exist" in r.output


@pytest.mark.slow
def test_serve_starts_a_server_on_loopback_that_wants_its_token(tmp_path, shapes_dir):
    import httpx

    idx, _ = build_photo_index(tmp_path, shapes_dir)
    proc, base = start_server(idx, tmp_path / "cache", "--token", "t0k")
    try:
        assert httpx.get(base + "/api/indexes").status_code == 401
        r = httpx.get(base + "/api/indexes", headers={"Authorization": "Bearer t0k"})
        assert r.status_code == 200 and r.json()["indexes"][0]["tables"]["images"]["rows"] == 48
        assert "<title>clipdex search</title>" in httpx.get(base + "/").text
    finally:
        proc.terminate()
        proc.wait(timeout=30)

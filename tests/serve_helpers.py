"""Shared by the serve tests: an image index of the drawn shapes built with the tiny model, and app clients."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from click.testing import CliRunner


def build_photo_index(root: Path, shapes_dir: Path) -> tuple[Path, Path]:
    """Copy the shapes under ``root`` and index them with clipdex-tiny -> (index path, photos folder)."""
    from cli.main import cli

    photos = root / "photos"
    shutil.copytree(shapes_dir, photos)
    idx = root / "photos.clipdex"
    r = CliRunner().invoke(cli, ["index", "images", str(photos), "--index", str(idx), "--model", "clipdex-tiny",
                                 "--workers", "0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return idx, photos


def client(idx: Path, cache: Path, **options):
    """A TestClient (lifespan on) for an app serving ``idx``; use it as a context manager."""
    from fastapi.testclient import TestClient

    from clipdex.serve.app import create_app
    from clipdex.serve.config import ServeConfig

    return TestClient(create_app(ServeConfig(indexes=[str(idx)], cache_dir=cache, **options)))


def served_photos(root: Path, shapes_dir: Path, **options):
    """Generator for a module fixture: (client, index path, photos folder) while an app serves the shapes."""
    idx, photos = build_photo_index(root, shapes_dir)
    with client(idx, root / "cache", **options) as c:
        yield c, idx, photos


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_app(indexes: list[str], cache: Path):
    """The service app for ``indexes`` run by uvicorn in a thread on a free loopback port, waited for (bounded)
    until it has started -> its base URL; stopped when the block ends."""
    import uvicorn

    from clipdex.serve.app import create_app
    from clipdex.serve.config import ServeConfig

    port = free_port()
    app = create_app(ServeConfig(indexes=indexes, port=port, cache_dir=cache))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(600):                     # bounded: up to 600 short waits for start-up
        if srv.started or not thread.is_alive():
            break
        threading.Event().wait(0.05)
    assert srv.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


def start_server(idx: Path, cache: Path, *options: str, stdout=subprocess.PIPE) -> tuple[subprocess.Popen, str]:
    """``clipdex serve IDX OPTIONS`` in a process of its own on a free loopback port, waited for (bounded) until
    ``/healthz`` answers -> (the process, its base URL). The caller terminates it."""
    import httpx

    root = str(Path(__file__).resolve().parents[1])
    port = free_port()
    env = {**os.environ, "PYTHONPATH": root, "XDG_CACHE_HOME": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", str(idx), "--port", str(port), *options],
                            env=env, cwd=root, stdout=stdout, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):  # bounded: the model loads, then uvicorn binds
        if proc.poll() is not None:
            break
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1]
    return proc, base

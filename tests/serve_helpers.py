"""Shared by the serve tests: an image index of the drawn shapes built with the tiny model, and app clients."""
from __future__ import annotations

import shutil
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

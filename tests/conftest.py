"""Shared fixtures: the tiny model, generated images and bad files, a CLI runner; no network anywhere."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never reach for the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = "clipdex-tiny"


@pytest.fixture(scope="session")
def tiny():
    from retrieval.encode.encoder import load_encoder

    return load_encoder(TINY, device="cpu")


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """48 drawn images (4 shapes x 6 colours x 2) under shapes/<shape>/<colour>_<i>.png; read-only by convention."""
    from indexers.samples import make_shapes

    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, per_pair=2, size=96)
    return root


@pytest.fixture
def shapes_copy(tmp_path, shapes_dir) -> Path:
    """A private, modifiable copy of the shapes."""
    import shutil

    dst = tmp_path / "photos"
    shutil.copytree(shapes_dir, dst)
    return dst


@pytest.fixture
def runner():
    from click.testing import CliRunner

    return CliRunner()


@pytest.fixture
def cli():
    from cli.main import cli as group

    return group


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact oracle: (D, I) of the k largest inner products."""
    S = xq @ xb.T
    I = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(S, I, 1), I


def assert_same_topk(D, I, D_ref, I_ref, atol=1e-5):
    """Same top-k up to ties: scores equal row by row, and ids equal wherever the score is not tied."""
    np.testing.assert_allclose(D, D_ref, atol=atol)
    for r in range(len(I)):
        for c in range(I.shape[1]):
            tied = np.sum(np.abs(D_ref[r] - D_ref[r, c]) < atol) > 1
            if not tied:
                assert I[r, c] == I_ref[r, c], (r, c)


ROOT = Path(__file__).resolve().parents[1]


def execute_notebook(name: str, monkeypatch, timeout: int = 300, cwd: Path | None = None) -> list[dict]:
    """Run notebooks/<name> top to bottom in a python3 kernel (the project on PYTHONPATH, matplotlib's inline
    backend whatever MPLBACKEND says); returns the outputs of every code cell. A failing cell raises."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=timeout,
                            resources={"metadata": {"path": str(cwd or ROOT)}}).execute()
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def notebook_text(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") for o in outputs)

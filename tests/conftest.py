"""Shared fixtures: the tiny model, generated images and bad files, the classification corpus, a CLI runner; no
network anywhere. Helpers that are not fixtures live in tests/helpers.py, generated data in clipdex.synthetic."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli as clipdex_cli
from clipdex.synthetic import make_shapes
from clipdex.synthetic.classify import make_classify_files
from indexers.images import ImageIndexOptions, index_images
from retrieval.index.directory import create_index
from retrieval.io.sources import discover

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never reach for the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "CLIPDEX_CACHE" not in os.environ:  # exported text towers go to a private folder, removed at exit
    os.environ["CLIPDEX_CACHE"] = tempfile.mkdtemp(prefix="clipdex-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CLIPDEX_CACHE"], True)

TINY = "clipdex-tiny"


@pytest.fixture(scope="session")
def tiny():
    from retrieval.encode.encoder import load_encoder  # loads torch: only for the tests that encode

    return load_encoder(TINY, device="cpu")


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """48 drawn images (4 shapes x 6 colours x 2) under shapes/<shape>/<colour>_<i>.png; read-only by convention."""
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, per_pair=2, size=96)
    return root


@pytest.fixture
def shapes_copy(tmp_path, shapes_dir) -> Path:
    """A private, modifiable copy of the shapes."""
    dst = tmp_path / "photos"
    shutil.copytree(shapes_dir, dst)
    return dst


@pytest.fixture(scope="session")
def classify_corpus(tmp_path_factory) -> dict:
    """The files of :func:`make_classify_files` plus two indexes built from them with the tiny model:
    ``support`` (the 48 captioned support images, from the CSV manifest) and ``plain`` (the circles and stars,
    no captions). Shared by the classify tests: read-only by convention."""
    import torch  # heavy: only the classify tests need it (they always ran the tiny model on one thread)

    torch.set_num_threads(1)
    data = make_classify_files(tmp_path_factory.mktemp("classify"))
    root = data["root"]
    opts = ImageIndexOptions(workers=0, optimize=False)
    with create_index(root / "support.clipdex", model=TINY) as ix:
        index_images(ix, discover([data["support_csv"]]), opts)
    with create_index(root / "plain.clipdex", model=TINY) as ix:
        index_images(ix, discover([str(root / "support" / "circle"), str(root / "support" / "star")]), opts)
    return {**data, "support": str(root / "support.clipdex"), "plain": str(root / "plain.clipdex")}


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def cli():
    return clipdex_cli

"""Every example in README.md runs: each fenced ```bash and ```python block, against generated data in a temporary
folder, with the tiny model in place of the default one (whose weights cannot be downloaded here).

The blocks are read from the README as it stands, so a changed example is tested as written. What the test changes
or provides is spelled out below: SUBSTITUTIONS (text replaced in every example), WORKSPACE (the files the examples
name, generated), PREBUILT (indexes that exist before the bash examples run, pinned to the tiny model, so commands
without --model use it), PYTHON_GIVEN (the variables the Python examples assume) and NOT_RUN (blocks left out, and
why). Each bash line must exit 0 and print something on stdout; each Python block must run and every value it
binds must be non-empty.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from clipdex.synthetic.classify import make_classify_files
from clipdex.synthetic.embeddings import make_clip_retrieval_dir, unit_vectors
from clipdex.synthetic.shapes import COLORS, draw_shape
from clipdex.synthetic.texts import make_text_files
from clipdex.synthetic.videos import make_videos, scene_still
from indexers.images import ImageIndexOptions, index_images
from retrieval.index.directory import create_index
from retrieval.io.sources import discover
from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # about a minute: every README command, each on freshly generated data

TINY = "clipdex-tiny"

# Text replaced in every example before it runs, in this order.
SUBSTITUTIONS = [
    ("ViT-B-32:laion2b_s34b_b79k", TINY),  # the default model's weights cannot be downloaded in the tests
    (" [--resume]", ""),  # "[...]" marks an optional argument; it is not shell
    ("width >= 1024", "width >= 64"),  # the generated photos are 64 pixels wide
    ("--min-score 0.2", "--min-score -1"),  # clipdex-tiny knows only drawings: "sunset" may score them all below 0.2
    ('"main street" --mode text', '"circle" --mode text'),  # keywords only: the drawn photos' names carry no streets
]

# Commands that name no model and have no index to take one from would load the default model: they get
# --model clipdex-tiny.
NEEDS_A_MODEL = {"classify": "--support"}  # command -> the option that supplies a model instead

# The files and folders the examples name, generated into the working folder (see :func:`make_workspace`).
WORKSPACE = {
    "photos/": "24 drawn shapes, 6 of each class (also the images to classify)",
    "labels.csv": "path,label for photos/",
    "classes.txt": "circle, square, triangle, star",
    "shots/": "2 drawn shapes per class",
    "pairs.csv": "a captioned manifest (path, caption, label) of 48 drawn shapes under support/",
    "query.jpg, photo.jpg": "a drawn red circle and a drawn blue square",
    "notes/, posts.jsonl, reviews.csv, data.parquet": "captions as texts (a `body` column in the tables)",
    "long_description.txt": "300 words",
    "my-videos/": "five generated videos",
    "still.png": "a frame of the first video at 2 s",
    "clip-retrieval-out/": "clip-retrieval's layout, 16-dimensional vectors",
    "queries.npy": "3 query vectors of the same dimension",
}

# Indexes that exist before the bash examples run, all pinned to the tiny model.
PREBUILT = {
    "photos.clipdex": "empty (the first example fills it)",
    "my.clipdex": "the images of photos/ (the examples add texts and videos, and search images with a long text)",
    "web.clipdex": "pairs.csv: the captioned support index the classify examples use",
}

# Indexes a Python example reads without making them: a phrase that identifies the block -> index -> backend.
PYTHON_PREBUILT = {"lancedb.connect(": {"photos.clipdex": "lance", "photos-faiss.clipdex": "faiss"}}

# What the Python examples use without defining it: name -> the expression that makes it.
PYTHON_GIVEN = {
    "vectors": "unit_vectors(0, 20, 512)",
    "paths": "[f'vec_{i}' for i in range(20)]",
    "queries": "unit_vectors(1, 3, 512)",
}
PYTHON_GIVEN_IMPORT = "from clipdex.synthetic.embeddings import unit_vectors"

# Appended to a Python example: reports the size of every value it bound (rows of a table, len of the rest).
PYTHON_REPORT = """
import json as _json, types as _types
_sizes = {_k: getattr(_v, "num_rows", len(_v) if hasattr(_v, "__len__") else None)
          for _k, _v in list(globals().items()) if not _k.startswith("_") and _k not in _GIVEN
          and not callable(_v) and not isinstance(_v, _types.ModuleType)}
print("BOUND " + _json.dumps(_sizes))
"""

# Blocks not run: a phrase that identifies the block -> why.
NOT_RUN = {
    "pip install -e": "the quickstart installs the package; .ci/run runs it on a fresh clone",
    "clipdex serve photos.clipdex ": "starts a server that runs until stopped; tests/test_serve_cli.py runs one",
    "curl -s localhost:8000": "talks to a running server; tests/test_serve_api.py sends the same requests",
    "--engine ray": "names shard sets that are not generated here and starts Ray; tests/test_shards.py and "
                    "tests/test_ray_engine.py run both engines on generated shards",
}


def readme_blocks() -> list[tuple[str, str, str]]:
    """(id, language, code) of every fenced bash or python block, the id naming the section it sits in; the code
    is preceded by blank lines so that its line numbers are the README's."""
    blocks, heading, counts = [], "top", {}
    fence = re.compile(r"^```(\w*)\s*$")
    lines = (ROOT / "README.md").read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = re.sub(r"[^a-z0-9]+", "-", lines[i].lstrip("#").strip().lower()).strip("-")
        m = fence.match(lines[i])
        if m:
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if m.group(1) in ("bash", "python"):
                counts[heading] = counts.get(heading, 0) + 1
                code = "\n" * (i + 1) + "\n".join(lines[i + 1:j])
                blocks.append((f"{heading}-{counts[heading]}", m.group(1), code))
            i = j
        i += 1
    return blocks


def substitute(code: str) -> str:
    for old, new in SUBSTITUTIONS:
        code = code.replace(old, new)
    return code


def commands(block: str) -> list[str]:
    """The command lines of a bash block (continuation lines joined, blank and comment lines dropped)."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(line.strip())
    return out


def make_workspace(root):
    """Generate every file of WORKSPACE under ``root``."""
    files = make_classify_files(root, test_dir="photos")
    shutil.copy(files["support_csv"], root / "pairs.csv")
    draw_shape("circle", COLORS["red"]).save(root / "query.jpg")
    draw_shape("square", COLORS["blue"]).save(root / "photo.jpg")
    make_text_files(root)
    videos = make_videos(root / "my-videos")
    scene_still(videos[0], 2.0).save(root / "still.png")
    make_clip_retrieval_dir(root / "clip-retrieval-out", dim=16, bad=False)
    np.save(root / "queries.npy", unit_vectors(2, 3, 16))
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    pytest.importorskip("av")  # the README's video examples need the video extra
    return make_workspace(tmp_path_factory.mktemp("readme-corpus"))


@pytest.fixture(scope="module")
def bash_workspace(corpus, tmp_path_factory):
    """A copy of the corpus with the PREBUILT indexes, shared by the bash blocks in README order."""
    root = tmp_path_factory.mktemp("readme-bash") / "work"
    shutil.copytree(corpus, root)
    opts = ImageIndexOptions(workers=0)
    create_index(root / "photos.clipdex", model=TINY).close()
    with create_index(root / "my.clipdex", model=TINY) as ix:
        index_images(ix, discover([str(root / "photos")]), opts)
    with create_index(root / "web.clipdex", model=TINY) as ix:
        index_images(ix, discover([str(root / "pairs.csv")]), opts)
    return root


def argv_of(line: str, cwd) -> list[str]:
    """The arguments bash would pass to ``clipdex`` for ``line`` (quotes, ``$(...)`` and comments as bash does),
    with --model clipdex-tiny added where NEEDS_A_MODEL says so."""
    script = 'clipdex() { printf "%s\\0" "$@"; }\n' + line
    out = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, check=True)
    argv = [a.decode() for a in out.stdout.split(b"\0")[:-1]]
    if argv and argv[0] in NEEDS_A_MODEL and "--model" not in argv and NEEDS_A_MODEL[argv[0]] not in argv:
        argv += ["--model", TINY]
    return argv


def not_run_reason(code: str) -> str | None:
    return next((why for phrase, why in NOT_RUN.items() if phrase in code), None)


BLOCKS = readme_blocks()
BASH = [(i, code) for i, lang, code in BLOCKS if lang == "bash"]
PYTHON = [(i, code) for i, lang, code in BLOCKS if lang == "python"]


def test_the_readme_has_examples_of_both_kinds():
    assert len(BASH) >= 5 and len(PYTHON) >= 1, [i for i, _, _ in BLOCKS]


@pytest.mark.parametrize("code", [c for _, c in BASH], ids=[i for i, _ in BASH])
def test_bash_example_runs(code, bash_workspace, monkeypatch):
    if why := not_run_reason(code):
        pytest.skip(why)
    monkeypatch.chdir(bash_workspace)
    runner = CliRunner()
    failed = []
    for line in commands(substitute(code)):
        if not line.startswith("clipdex "):
            failed.append(f"$ {line}\n    not a clipdex command: the test runs only those (or name the block in "
                          f"NOT_RUN)")
            continue
        r = runner.invoke(cli, argv_of(line, bash_workspace))
        if r.exit_code != 0 or not r.stdout.strip():
            crash = "" if r.exception is None or isinstance(r.exception, SystemExit) else repr(r.exception)
            failed.append(f"$ {line}\n    exit {r.exit_code}, {len(r.stdout.strip())} characters on stdout; "
                          f"stderr: {r.stderr.strip()[-300:]} {crash}")
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("code", [c for _, c in PYTHON], ids=[i for i, _ in PYTHON])
def test_python_example_runs(code, corpus, tmp_path):
    """The example runs as a user would run it: a fresh interpreter in a folder holding the corpus."""
    if why := not_run_reason(code):
        pytest.skip(why)
    work = tmp_path / "work"
    shutil.copytree(corpus, work)
    for phrase, indexes in PYTHON_PREBUILT.items():
        if phrase in code:
            for name, backend in indexes.items():
                with create_index(work / name, model=TINY, backend=backend) as ix:
                    index_images(ix, discover([str(work / "photos")]), ImageIndexOptions(workers=0))
    given = {name: expr for name, expr in PYTHON_GIVEN.items() if re.search(rf"\b{name}\b", code)}
    prelude = "; ".join([PYTHON_GIVEN_IMPORT, f"_GIVEN = {sorted(given)!r}"] +
                        [f"{name} = {expr}" for name, expr in given.items()])
    code = substitute(code)
    assert code.startswith("\n"), "the example starts on a README line of its own"
    script = prelude + code + "\n" + PYTHON_REPORT  # the prelude fills the first padding line: line numbers hold
    out = subprocess.run([sys.executable, "-c", script], cwd=work, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr.strip()[-2000:].replace('"<string>"', '"README.md"')
    sizes = json.loads(out.stdout.split("BOUND ", 1)[1])
    assert sizes, "the example binds no values"
    assert not [k for k, n in sizes.items() if n == 0], f"empty results: {sizes}"

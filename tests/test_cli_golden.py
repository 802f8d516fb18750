"""What people see: the human (non ``--json``) output of the CLI, compared with the files under ``tests/golden/``.

Each golden file holds one command (as typed, ``$ clipdex ...``), its stdout, its stderr (after ``[stderr]``) and
a non-zero exit status (``[exit N]``), run on a small fixed corpus: 24 drawn shapes (seed 0), indexed with the tiny
model. Volatile parts are normalised before comparing: the temporary folder (``<TMP>``), timestamps (``<TIME>``),
sizes on disk (``<SIZE>``), durations and rates (``<SECONDS>``, ``<RATE>``). Scores are compared as printed (the
queries are chosen so that no two shown results score within 0.005 of each other, where float noise could swap
them).

A change in what users see is then a reviewed diff: regenerate the files on purpose and commit them with the change,

    CLIPDEX_UPDATE_GOLDEN=1 python -m pytest tests/test_cli_golden.py

(``tests/golden/README.md`` says the same).
"""
from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from cli.main import cli
from cli.output import print_table
from clipdex.synthetic.classify import CLASSES
from clipdex.synthetic.shapes import make_shapes
from tests.helpers import ROOT

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CLIPDEX_UPDATE_GOLDEN") == "1"
TINY = "clipdex-tiny"

_VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?"), "<TIME>"),
    (re.compile(r"\b\d+(\.\d+)? (B|KiB|MiB|GiB|TiB)\b"), "<SIZE>"),
    (re.compile(r"\b\d+(\.\d+)?s\b"), "<SECONDS>s"),
    (re.compile(r"\(\d+(\.\d+)? (\w+)/s\)"), r"(<RATE> \2/s)"),
]


def normalise(text: str, root: Path) -> str:
    """``text`` with the volatile parts replaced. Tables pad their path column to the longest path, which held the
    real folder: a header whose path column is followed by others is re-padded as if that folder were ``<TMP>``."""
    delta = len(str(root)) - len("<TMP>")
    lines = []
    for line in text.replace(str(root), "<TMP>").splitlines():
        if line.startswith("rank ") and delta > 0:
            line = re.sub(r"\bpath( +)(?=\S)", lambda m: "path" + m.group(1)[delta:], line, count=1)
        for pattern, repl in _VOLATILE:
            line = pattern.sub(repl, line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def transcript(args: list[str], stdout: str, stderr: str, code: int, root: Path) -> str:
    shown = " ".join(shlex.quote(a) for a in args)
    text = f"$ clipdex {shown}\n{stdout}"
    if stderr.strip():
        text += f"[stderr]\n{stderr}"
    if code:
        text += f"[exit {code}]\n"
    return normalise(text, root)


def check_golden(name: str, got: str) -> None:
    """Compare with ``tests/golden/<name>.txt`` (or write it, with CLIPDEX_UPDATE_GOLDEN=1)."""
    path = GOLDEN / f"{name}.txt"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got)
        return
    assert path.is_file(), f"no golden file {path}; write it with CLIPDEX_UPDATE_GOLDEN=1"
    want = path.read_text()
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), f"golden/{name}.txt",
                                            "output"))
        pytest.fail(f"the output of {name} changed (CLIPDEX_UPDATE_GOLDEN=1 rewrites the file if intended):\n{diff}")


def run(corpus: dict, *args: str) -> str:
    """Run ``clipdex ARGS`` in this process ({root} in an argument is the corpus folder); its transcript."""
    argv = [a.format(root=corpus["root"]) for a in args]
    r = CliRunner().invoke(cli, argv)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return transcript(argv, r.stdout, r.stderr, r.exit_code, corpus["root"])


def test_normalising_gives_the_same_text_whatever_the_folder_is_called(capsys):
    """The comparison does not depend on where the corpus lies: a table rendered under two folders of different
    lengths normalises to the same text (its path column is not the last one, so its header is re-padded)."""
    texts = []
    for root in (Path("/tmp/x"), Path("/var/folders/zz/abcdefghijklmnop/T/clipdex-golden-0123abcd")):
        print_table(pa.table({"rank": [1, 2], "score": [0.5, 0.25], "path": [f"{root}/a.mp4", f"{root}/sub/bb.mp4"],
                              "t_best": [1.0, 12.5]}))
        texts.append(normalise(capsys.readouterr().out, root))
    assert texts[0] == texts[1] and texts[0].splitlines()[1].startswith("1     0.5000  <TMP>/a.mp4       1.0000")


@pytest.fixture(scope="module")
def corpus():
    """The fixed corpus in a short temporary folder (``/tmp`` where there is one, so no path is cut short in the
    tables): photos/<shape>/<colour>_0.png, the index built by ``clipdex index images`` (its transcript kept),
    classes.txt, labels.csv and queries.jsonl."""
    root = Path(tempfile.mkdtemp(prefix="clipdex-golden-", dir="/tmp" if os.path.isdir("/tmp") else None)).resolve()
    try:
        make_shapes(root / "photos", per_pair=1, size=64, seed=0)
        (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        labels = sorted(f"photos/{p.parent.name}/{p.name},{p.parent.name}" for p in (root / "photos").rglob("*.png"))
        (root / "labels.csv").write_text("path,label\n" + "\n".join(labels) + "\n")
        queries = [{"query": f"a {c} {s}", "relevant": [f"photos/{s}/{c}_0.png"]}
                   for s, c in (("circle", "red"), ("star", "blue"), ("square", "green"), ("triangle", "yellow"))]
        (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
        corpus = {"root": root, "index": str(root / "photos.clipdex")}
        args = ("index", "images", "{root}/photos", "--index", "{root}/photos.clipdex", "--model", TINY, "--workers",
                "0")
        corpus["indexing"] = run(corpus, *args) + run(corpus, *args)  # the first run, then one with nothing to do
        yield corpus
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_index_images(corpus):
    check_golden("index_images", corpus["indexing"])


@pytest.mark.parametrize("name, args", [
    ("search_text", ["search", "{root}/photos.clipdex", "a red circle", "-k", "5"]),
    ("search_image_where", ["search", "{root}/photos.clipdex", "--image", "{root}/photos/circle/red_0.png", "-k",
                            "3", "--where", "path LIKE '%/star/%'"]),
    ("search_min_score", ["search", "{root}/photos.clipdex", "a blue star", "--min-score", "0.3"]),
    ("search_missing_index", ["search", "{root}/nothing.clipdex", "a red circle"]),
    ("info", ["info", "{root}/photos.clipdex"]),
    ("eval_retrieval", ["eval", "retrieval", "{root}/photos.clipdex", "{root}/queries.jsonl"]),
    ("classify", ["classify", "{root}/photos/circle", "{root}/photos/star", "--classes", "{root}/classes.txt",
                  "--labels", "{root}/labels.csv", "--model", TINY, "-k", "2"]),
])
def test_human_output(corpus, name, args):
    check_golden(name, run(corpus, *args))


@pytest.mark.slow  # generates and indexes five videos (PyAV): about 10 s on 2 cores
def test_video_search(corpus):
    pytest.importorskip("av")
    from clipdex.synthetic.videos import make_videos  # the video extra: only this test needs it

    make_videos(corpus["root"] / "videos")
    text = run(corpus, "index", "videos", "{root}/videos", "--index", "{root}/videos.clipdex", "--model", TINY,
               "--workers", "0")
    for table in ("videos", "frames"):  # (queries whose shown scores stand well apart, ties could swap ranks)
        text += run(corpus, "search", "{root}/videos.clipdex", "a blue circle", "--table", table, "-k", "3")
    check_golden("search_videos", text)


@pytest.mark.slow  # a fresh interpreter imports open_clip: about 5 s
def test_models(tmp_path):
    """``clipdex models`` with an empty model cache (its own HOME and HF_HOME): the shipped models are cached,
    the default one is not, whatever this machine has downloaded."""
    env = {**os.environ, "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    r = subprocess.run([sys.executable, "-m", "cli.main", "models"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=300)
    check_golden("models", transcript(["models"], r.stdout, r.stderr, r.returncode, tmp_path))

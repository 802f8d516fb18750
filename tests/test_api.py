"""``import clipdex``, the public Python API: cheap to import (no torch, no library module loaded until a name is
used), every public name resolves, the functions take paths, lists and keyword options as the commands do, and
the README's Python example, run through it on generated drawings with the tiny model, finds what it asks for."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

import clipdex
import retrieval.errors
from clipdex.synthetic.classify import make_classify_files
from clipdex.synthetic.shapes import COLORS, draw_shape
from retrieval.models.specs import DEFAULT_MODEL
from tests.helpers import ROOT

TINY = "clipdex-tiny"


def test_importing_clipdex_loads_neither_torch_nor_the_library():
    code = ("import clipdex, sys\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('indexers', 'retrieval.', "
            "'clipdex.', 'pyarrow', 'lancedb')) and m not in ('retrieval.errors', 'retrieval.version')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_every_public_name_resolves_and_is_listed():
    missing = [name for name in clipdex.__all__ if getattr(clipdex, name, None) is None]
    assert not missing
    assert set(clipdex.__all__) <= set(dir(clipdex))
    # the lazy table and the modules the names come from agree: nothing public is left out of __all__
    from clipdex import duplicates, indexing, querying, words

    assert set(clipdex._INDEXING) == set(indexing.__all__) and set(clipdex._QUERYING) == set(querying.__all__)
    assert set(clipdex._DUPLICATES) == set(duplicates.__all__) and set(clipdex._WORDS) == set(words.__all__)
    errors = {n for n, v in vars(retrieval.errors).items() if isinstance(v, type) and issubclass(v, Exception)}
    assert set(clipdex.__all__) == {"__version__", *indexing.__all__, *querying.__all__, *duplicates.__all__,
                                    *words.__all__, *errors}
    assert issubclass(clipdex.IndexNotFound, clipdex.ClipdexError) and clipdex.search.__doc__
    with pytest.raises(AttributeError, match="no attribute 'serch'"):
        clipdex.serch  # noqa: B018


def test_index_and_search_take_paths_lists_and_keyword_options(tmp_path, shapes_dir):
    circles, squares = shapes_dir / "circle", shapes_dir / "square"
    with pytest.raises(clipdex.InvalidInput, match="not found|does not exist"):  # refused before any index exists
        clipdex.index_images(tmp_path / "new.clipdex", tmp_path / "missing", model=TINY)
    assert not (tmp_path / "new.clipdex").exists()
    with pytest.raises(TypeError, match="index must be an Index or a path, not int"):
        clipdex.index_images(42, tmp_path / "missing")
    with pytest.raises(TypeError, match="unknown option 'batchsize'.*batch_size"):
        clipdex.index_images(tmp_path / "new.clipdex", circles, model=TINY, batchsize=4)

    # an index given as a path is created with the asked model, filled, and closed again
    s = clipdex.index_images(str(tmp_path / "ix.clipdex"), [circles, str(squares)], model=TINY, workers=0,
                             batch_size=5)
    assert isinstance(s, clipdex.IndexSummary) and (s.added, s.errors) == (24, 0)
    with clipdex.open_index(tmp_path / "ix.clipdex", writable=True) as ix:
        again = clipdex.index_images(ix, [circles, squares], clipdex.ImageIndexOptions(workers=0))
        assert (again.added, again.unchanged) == (0, 24)
        with pytest.raises(clipdex.ModelMismatch):
            clipdex.index_images(ix, circles, model="random:clipdex-tiny", workers=0)
    hits = clipdex.search(tmp_path / "ix.clipdex", "a red square", k=3).to_pylist()
    assert "/square/red_" in hits[0]["path"] and [h["rank"] for h in hits] == [1, 2, 3]


def test_video_sampling_and_text_options_are_checked_before_anything_is_read(tmp_path):
    with pytest.raises(clipdex.InvalidInput, match="choose one sampling"):
        clipdex.index_videos(tmp_path / "v.clipdex", tmp_path / "missing", fps=2, frames=8)
    with pytest.raises(clipdex.InvalidInput, match="--fps must be a positive"):
        clipdex.index_videos(tmp_path / "v.clipdex", tmp_path / "missing", fps=0)
    with pytest.raises(TypeError, match="unknown option 'fps'.*TextIndexOptions"):
        clipdex.index_texts(tmp_path / "t.clipdex", tmp_path / "missing", fps=2)
    assert not list(tmp_path.iterdir())


def test_evaluate_retrieval_takes_query_objects_and_uses_the_index_model(tmp_path, shapes_dir):
    with clipdex.create_index(tmp_path / "ix.clipdex", model=TINY) as ix:
        clipdex.index_images(ix, shapes_dir, workers=0)
        queries = [clipdex.EvalQuery(f"a {c} {s}", None, [f"{s}/{c}_0.png", f"{s}/{c}_1.png"])
                   for s in ("circle", "star") for c in ("red", "blue")]
        result = clipdex.evaluate_retrieval(ix, queries)
    assert result["summary"]["queries"] == 4 and result["summary"]["recall@5"] == 1.0
    assert all(q["first_relevant_rank"] == 1 for q in result["queries"]), result["queries"]


def readme_python_example() -> tuple[int, str]:
    """(line number, code) of the first Python block of the README's "Python API" section."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Python API\n")
    m = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    return text.count("\n", 0, m.start(1)), m.group(1)


@pytest.mark.slow  # about 20 s: two classification runs of 80 prompts per class on top of indexing
def test_the_readme_python_example_finds_what_it_asks_for(tmp_path, monkeypatch):
    """The README's example as written, with the tiny model, "a red circle" for its text query and a drawn red
    circle as query.jpg, over 24 drawings (a shape in each of 6 colours; the class of each is its shape)."""
    make_classify_files(tmp_path, test_dir="photos")  # photos/<shape>/<colour>_0.png, labels.csv, classes.txt
    draw_shape("circle", COLORS["red"]).save(tmp_path / "query.jpg")
    line, code = readme_python_example()
    for old, new in ((DEFAULT_MODEL, TINY), ("a dog on the beach", "a red circle"), ("width >= 1024", "width >= 64"),
                     ("batch_size=64", "batch_size=64, workers=0")):
        assert old in code, old
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile("\n" * line + code, str(ROOT / "README.md"), "exec"), ns)  # tracebacks name README lines

    assert (ns["summary"].added, ns["summary"].errors) == (24, 0)
    hits, alike = ns["hits"].to_pylist(), ns["alike"].to_pylist()
    assert len(hits) == 10 and hits[0]["path"].endswith("/circle/red_0.png"), hits[:3]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert alike[0]["path"].endswith("/circle/red_0.png") and all(h["width"] >= 64 for h in alike)
    predictions = ns["predictions"]
    assert len(predictions) == 24 and all(set(p.top) == {"zeroshot", "susx"} for p in predictions)
    right = {m: sum(p.top[m][0][0] == p.path.split("/")[-2] for p in predictions) for m in ("zeroshot", "susx")}
    assert min(right.values()) >= 22, right  # the tiny model names the shape of nearly every drawing
    accuracy = ns["accuracy"]
    assert accuracy["images"] == 24 and accuracy["accuracy"]["zeroshot"]["top1"] >= 90.0, accuracy


def test_a_script_without_a_main_guard_gets_one_error_not_every_file_recorded_as_a_crash(tmp_path):
    """Spawned decoding workers import the calling script again; without ``if __name__ == "__main__":`` they die
    while starting. That is one clear error naming the fix, and no file is recorded as an error of its own."""
    (tmp_path / "img").mkdir()
    for i, colour in enumerate(("red", "blue", "green")):
        draw_shape("circle", COLORS[colour]).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "noguard.py").write_text(
        "import clipdex\nclipdex.index_images('ix.clipdex', 'img', model='clipdex-tiny', workers=1)\n")
    out = subprocess.run([sys.executable, "noguard.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "WorkersUnavailable" in out.stderr and '__name__ == "__main__"' in out.stderr
    ix = clipdex.open_index(tmp_path / "ix.clipdex")
    try:
        assert not ix.store.has_table("errors") or ix.store.count("errors") == 0
    finally:
        ix.close()

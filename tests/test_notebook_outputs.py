"""The notebooks are stored executed (readable on GitHub without running), and the staleness check of
tests/notebooks.py fails on a changed result but not on noise. Fast: no kernel is started here; the slow tests
test_*notebook*.py execute each notebook and compare."""
import json

import pytest

from tests.notebooks import NOTEBOOKS, normalise, stale_outputs, texts_agree

NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def _nb(*cells):
    """A notebook dict whose code cells have the given outputs (lists of output dicts)."""
    nbformat = pytest.importorskip("nbformat")
    return nbformat.from_dict({"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": list(c),
                                          "execution_count": None} for c in cells],
                               "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def _stream(text, name="stdout"):
    return {"output_type": "stream", "name": name, "text": text}


def _picture(text="<Figure size 640x480 with 1 Axes>"):
    return {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0KGgo=", "text/plain": text}}


def test_there_are_four_notebooks():
    assert NAMES == ["classification.ipynb", "long_text.ipynb", "quickstart.ipynb", "video_search.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_each_notebook_is_stored_with_its_outputs_and_a_picture(name):
    nb = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    outs = [o for c in code for o in c.get("outputs", [])]
    assert sum(bool(c.get("outputs")) for c in code) >= len(code) - 2, "most code cells show something"
    assert any("image/png" in o.get("data", {}) for o in outs), "a picture (thumbnails or a plot)"
    assert not [o for o in outs if o.get("output_type") == "error"]
    # the texts only: a picture's base64 may hold "0x7f" or "/work/" by chance
    text = json.dumps([{k: v for k, v in o.get("data", {}).items() if not k.startswith("image/")} if "data" in o
                       else o for o in outs])
    for noise in ("/tmp/", "0x7f", "/work/", "/home/", "Warning: IProgress"):
        assert noise not in text, f"{name} stores {noise!r}: outputs must not depend on where they were made"
    assert all("execution" not in c.get("metadata", {}) for c in code), "no timing metadata"


def test_text_noise_is_forgiven():
    assert texts_agree("score 0.6289 at <Figure at 0x7f3a9c0d1e50>", "score 0.6290 at <Figure at 0x7f11aa00bb11>")
    assert texts_agree("found /tmp/tmpab12/photos/a.png  \n", "found /tmp/tmpzz99/photos/a.png")
    assert texts_agree("p=1.23e-05", "p=1.2301e-05")
    assert normalise("a  \nb\n\n") == "a\nb"


@pytest.mark.parametrize("stored, fresh", [
    ("#1 circle/red_1.png 0.63", "#1 circle/red_0.png 0.63"),   # another file
    ("added 48, errors 0", "added 47, errors 1"),               # other counts
    ("score 0.629", "score 0.633"),                             # a result moved past rounding
    ("zeroshot   92.2", "zeroshot   90.6"),                     # an accuracy changed
    ("4 of 4", "4 of 4\n1 of 4"),                               # a line more
])
def test_a_changed_result_is_stale(stored, fresh):
    assert not texts_agree(stored, fresh)
    assert stale_outputs(_nb([_stream(stored)]), _nb([_stream(fresh)]))


def test_pictures_are_compared_by_presence_per_cell():
    stored = _nb([_stream("a\n"), _picture()], [_stream("b\n")])
    assert stale_outputs(stored, _nb([_stream("a\n"), _picture()], [_stream("b\n")])) == []
    assert stale_outputs(stored, _nb([_stream("a\n")], [_stream("b\n")]))              # the picture is gone
    assert stale_outputs(stored, _nb([_stream("a\n")], [_stream("b\n"), _picture()]))  # it moved
    assert stale_outputs(stored, _nb([_stream("a\n"), _picture()]))                   # a cell less


def test_streams_split_differently_are_the_same_text():
    one = _nb([_stream("a\nb\n")])
    assert stale_outputs(one, _nb([_stream("a\n"), _stream("b\n")])) == []
    assert stale_outputs(one, _nb([_stream("a\n"), _stream("b\n", "stderr")]))  # stderr is not stdout

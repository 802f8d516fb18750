"""Semantics end to end for videos and classification, through the real CLI with clipdex-tiny (trained on the
generated world): an object that appears at 6-8 s is found then, a still finds its video, and every
classification method runs on a style-shifted set with what holds robustly asserted."""
from __future__ import annotations

import json

import pytest

from clipdex.synthetic.world_sets import make_world_classify_files

TINY = "clipdex-tiny"


def invoke(runner, cli, *args):
    r = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    pytest.importorskip("av")
    from click.testing import CliRunner

    from cli.main import cli
    from clipdex.synthetic.world_sets import make_event_videos

    root = tmp_path_factory.mktemp("world_videos")
    vids = make_event_videos(root / "src")
    invoke(CliRunner(), cli, "index", "videos", root / "src", "--index", root / "ix", "--model", TINY,
           "--workers", 0, "--fps", 2)
    return root, {v["path"].rsplit("/", 1)[1]: v for v in vids}


def test_an_object_that_appears_at_6_to_8_seconds_is_found_then(videos, runner, cli):
    root, vids = videos
    r = invoke(runner, cli, "search", root / "ix", "a red star", "--table", "videos", "--segments", "-k", 3, "--json")
    top = json.loads(r.stdout.splitlines()[0])
    assert top["path"] == vids["star.mp4"]["path"]
    assert 6.0 <= top["t_best"] < 8.0
    assert any(s["start"] < 8.0 and s["end"] >= 6.0 for s in top["segments"])
    assert all(s["start"] >= 5.5 and s["end"] <= 8.5 for s in top["segments"]), top["segments"]


def test_a_colour_change_is_found_after_it_happens(videos, runner, cli):
    root, vids = videos
    r = invoke(runner, cli, "search", root / "ix", "a yellow circle", "--table", "videos", "-k", 1, "--json")
    top = json.loads(r.stdout.splitlines()[0])
    assert top["path"] == vids["recolor.mp4"]["path"] and top["t_best"] >= 5.0


def test_a_still_of_a_scene_finds_its_video(videos, runner, cli, tmp_path):
    from clipdex.synthetic.world_video import frame_at

    root, vids = videos
    for name, t in (("star.mp4", 2.0), ("heart.mp4", 7.0), ("recolor.mp4", 1.0)):
        still = tmp_path / f"{name}.png"
        frame_at(vids[name], t).save(still)
        r = invoke(runner, cli, "search", root / "ix", "--image", still, "--table", "videos", "-k", 1, "--json")
        top = json.loads(r.stdout.splitlines()[0])
        assert top["path"] == vids[name]["path"], (name, top)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from click.testing import CliRunner

    from cli.main import cli

    data = make_world_classify_files(tmp_path_factory.mktemp("world_classify"))
    invoke(CliRunner(), cli, "index", "images", data["support_csv"], "--index", data["root"] / "support.clipdex",
           "--model", TINY, "--workers", 0)
    return data


def _accuracy(runner, cli, corpus, split, *extra) -> dict:
    r = invoke(runner, cli, "classify", corpus[split], "--classes", corpus["classes"], "--labels",
               corpus[f"{split}_labels"], "--json", *extra)
    return json.loads(r.stdout.splitlines()[-1])["summary"]["accuracy"]


def test_zero_shot_knows_the_shapes_of_clean_drawings(runner, cli, corpus):
    acc = _accuracy(runner, cli, corpus, "clean", "--model", TINY)
    assert acc["zeroshot"]["top1"] >= 90.0, acc


def test_every_method_runs_on_a_style_shift_and_knows_the_shapes(runner, cli, corpus):
    acc = _accuracy(runner, cli, corpus, "shifted", "--method", "all", "--support", corpus["root"] / "support.clipdex",
                    "--shots", corpus["shots"], "--per-class", 8)
    assert set(acc) == {"zeroshot", "susx", "xmore", "reco", "tip", "tipx", "gda", "proker"}
    # what holds robustly on 64 images (benchmarks/results/tiny_classify.json: 86-92% top-1 for every method; which
    # method leads changes with a single image, so no ranking between methods is asserted)
    assert all(a["n"] == 64 and a["top1"] >= 75.0 and a["top5"] >= 90.0 for a in acc.values()), acc

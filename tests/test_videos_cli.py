"""``clipdex index videos`` and ``clipdex search --table videos|frames`` from the command line; bad input gives one
line, a non-zero exit and an untouched index."""
from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("av")

from clipdex.synthetic.videos import make_video, scene_still  # noqa: E402
from tests.helpers import tree_digest  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from click.testing import CliRunner

    from cli.main import cli

    root = tmp_path_factory.mktemp("vcli")
    vids = [make_video(root / "src" / "a.mp4", 61, 5.0, 10), make_video(root / "src" / "b.mkv", 62, 4.0, 12, (96, 64))]
    (root / "src" / "broken.webm").write_bytes(b"\x1aE\xdf\xa3" + b"\0" * 64)
    res = CliRunner().invoke(cli, ["index", "videos", str(root / "src"), "--index", str(root / "ix"),
                                   "--model", "clipdex-tiny", "--workers", "0", "--fps", "2", "--json"])
    assert res.exit_code == 0, res.output
    return root, vids, json.loads(res.stdout)


def test_index_videos_reports_what_it_did(built):
    _, _, summary = built
    assert summary["added"] == 2 and summary["errors"] == 1 and summary["frames"] == 10 + 8


def test_search_videos_with_a_still_returns_the_video_and_the_moment(built, runner, cli, tmp_path):
    root, vids, _ = built
    for v, t in ((vids[0], 3.2), (vids[1], 1.7)):
        res = runner.invoke(cli, ["search", str(root / "ix"), "--image", scene_still(v, t, tmp_path),
                                  "--table", "videos", "-k", "2", "--segments", "--json"])
        assert res.exit_code == 0, res.output
        top = json.loads(res.stdout.splitlines()[0])
        # the moment is the one-second scene the still comes from: inside a scene only a small shape moves a little,
        # which a model of drawings rightly treats as the same picture (frames at --fps 2: two per scene)
        assert top["path"] == v["path"] and int(top["t_best"]) == int(t)
        assert top["segments"] and all(s["start"] <= s["end"] for s in top["segments"])


def test_search_options_reach_the_ranking(built, runner, cli, tmp_path):
    root, vids, _ = built
    img = scene_still(vids[0], 2.2, tmp_path)

    def top(pool: str, tau: float = 0.05) -> dict:
        res = runner.invoke(cli, ["search", str(root / "ix"), "--image", img, "--table", "videos", "--pool", pool,
                                  "--alpha", "0", "--tau", str(tau), "--candidates", "5", "--json"])
        assert res.exit_code == 0, res.output
        row = json.loads(res.stdout.splitlines()[0])
        assert row["score"] == pytest.approx(row["pool_score"], abs=1e-6)  # alpha 0: the pooled frames alone
        return row

    out = {pool: top(pool) for pool in ("max", "mean", "query-scoring")}
    assert out["max"]["score"] == pytest.approx(out["max"]["frame_score"], abs=1e-6)
    assert out["mean"]["score"] < out["query-scoring"]["score"]  # the frames like the query weigh more
    # the temperature's two ends: all weight on the best frame is max pooling, uniform weights are mean pooling
    # (between them the score may pass max's: the weighted mean of the frames can lie nearer the query than any one)
    for tau, same in ((1e-4, "max"), (1e4, "mean")):
        row = top("query-scoring", tau)
        assert row["path"] == out[same]["path"] and row["score"] == pytest.approx(out[same]["score"], abs=1e-4)


def test_search_frames_returns_frames_with_times(built, runner, cli, tmp_path):
    root, vids, _ = built
    res = runner.invoke(cli, ["search", str(root / "ix"), "--image", scene_still(vids[1], 2.6, tmp_path), "--table",
                              "frames", "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    top = json.loads(res.stdout.splitlines()[0])
    assert top["path"] == vids[1]["path"] and int(top["t"]) == 2 and "frame_index" in top  # the still's scene
    table = runner.invoke(cli, ["search", str(root / "ix"), "a red circle", "--table", "videos"])
    assert table.exit_code == 0 and "t_best" in table.stdout.splitlines()[0]


@pytest.mark.parametrize("args, words", [
    (["--fps", "0"], "--fps must be a positive"),
    (["--frames", "-2"], "--frames must be a positive"),
    (["--fps", "1", "--frames", "4"], "choose one sampling"),
    (["MISSING"], "source not found"),
    (["NOTVIDEO"], "neither a folder"),
])
def test_bad_input_is_one_line_a_nonzero_exit_and_an_untouched_index(built, runner, cli, tmp_path, args, words):
    root, _, _ = built
    ix = tmp_path / "ix"
    shutil.copytree(root / "ix", ix)
    before = tree_digest(ix)
    (tmp_path / "notes.txt").write_text("not a video")
    src = {"MISSING": str(tmp_path / "missing.mp4"), "NOTVIDEO": str(tmp_path / "notes.txt")}
    argv = [src.get(a, a) for a in args if a in src] or [str(root / "src")]
    argv += [a for a in args if a not in src]
    res = runner.invoke(cli, ["index", "videos", *argv, "--index", str(ix)])
    assert res.exit_code != 0
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], res.output
    assert "Traceback" not in res.output
    assert tree_digest(ix) == before


def test_video_options_on_another_table_are_refused(built, runner, cli):
    root, _, _ = built
    res = runner.invoke(cli, ["search", str(root / "ix"), "red", "--table", "frames", "--pool", "mean"])
    assert res.exit_code == 1 and res.output.strip() == "error: --pool applies to --table videos only"
    res = runner.invoke(cli, ["search", str(root / "ix"), "red", "--table", "videos", "--alpha", "2"])
    assert res.exit_code == 1 and "--alpha must be between 0 and 1" in res.output

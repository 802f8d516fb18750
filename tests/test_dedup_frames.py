"""``clipdex dedup --table frames``: the same moment in different videos, with its times; one alike frame is not
the same footage (``segment_support``), frames of one video are never paired, blank frames never count."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retrieval.query.dedup_frames import offset_agreement, segment_support


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_a_shared_segment_is_supported_and_a_lone_alike_frame_is_not():
    rng = np.random.default_rng(0)
    xa = _unit(rng.standard_normal((10, 32)))
    ta = np.arange(10, dtype=np.float64)
    xb, tb = xa[4:9].copy(), np.arange(5, dtype=np.float64)            # B is A from 4 s to 8 s
    assert segment_support(ta, xa, 6, tb, xb, 2, 0.9, tol=0.6) == 4    # A at 6 s = B at 2 s, and 4 neighbours
    assert segment_support(ta, xa, 4, tb, xb, 0, 0.9, tol=0.6) == 2    # at B's start: only the 2 after exist
    lone = _unit(rng.standard_normal((5, 32)))
    lone[2] = xa[6]                                                    # one alike frame, nothing around it
    assert segment_support(ta, xa, 6, tb, lone, 2, 0.9, tol=0.6) == 0
    blank = np.ones(10, bool), np.array([True, False, True, False, True])
    assert segment_support(ta, xa, 6, tb, xb, 2, 0.9, tol=0.6, informative=blank) == 2   # blanks do not count
    assert segment_support(ta, xa, 6, tb + 0.5, xb, 2, 0.9, tol=0.2) == 4  # shifted times: the offset follows


@pytest.mark.slow
def test_frames_of_a_clip_are_found_in_its_source_at_their_times(runner, cli, tmp_path):
    pytest.importorskip("av")
    pytest.importorskip("imagehash")
    from clipdex.synthetic.dedup_video import make_dedup_videos

    make_dedup_videos(tmp_path / "v")
    res = runner.invoke(cli, ["index", "videos", str(tmp_path / "v"), "--index", str(tmp_path / "ix"),
                              "--model", "clipdex-tiny", "--workers", "0", "--fps", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["dedup", str(tmp_path / "ix"), "--table", "frames", "-k", "20", "--json"])
    assert res.exit_code == 0, res.output
    groups = [json.loads(line) for line in res.stdout.splitlines()]
    name = {m["id"]: Path(m["path"]).name for g in groups for m in g["members"]}
    t = {m["id"]: m["t"] for g in groups for m in g["members"]}
    videos = {m["id"]: m["video_id"] for g in groups for m in g["members"]}
    clip_pairs = 0
    for g in groups:
        assert g["kind"] == "near"
        for p in g["pairs"]:
            assert videos[p["a"]] != videos[p["b"]]                   # never two frames of one video
            assert {p["t_a"], p["t_b"]} == {t[p["a"]], t[p["b"]]} and p["support"] >= 2
            pair = {name[p["a"]]: t[p["a"]], name[p["b"]]: t[p["b"]]}
            if set(pair) == {"a.mp4", "a-clip.mp4"}:
                clip_pairs += 1
                assert pair["a.mp4"] - pair["a-clip.mp4"] == pytest.approx(4.0, abs=1.0)
        shown = {name[m["id"]] for m in g["members"]}
        assert not {"black-b.mp4", "black-c.mp4"} <= shown               # black openings are not the same footage
        for m in g["members"]:                                           # the bodies after the openings differ
            assert name[m["id"]] not in ("black-b.mp4", "black-c.mp4", "title-d.mp4", "title-e.mp4") or m["t"] < 3
    assert clip_pairs >= 3
    assert "verified duplicates" in res.stderr


def test_the_footage_agrees_best_at_its_true_offset():
    rng = np.random.default_rng(1)
    drift = np.cumsum(rng.standard_normal((12, 32)) * 0.15, axis=0) + rng.standard_normal(32)   # a slow shot
    xa, ta = _unit(drift), np.arange(12, dtype=np.float64)
    xb, tb = xa[4:9].copy(), np.arange(5, dtype=np.float64)
    scores = offset_agreement(ta, xa, tb, xb, np.array([-4.0, -3.0, 0.0, 1.0]), tol=0.6)
    assert int(np.argmax(scores)) == 0 and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert offset_agreement(ta, xa, tb, xb, np.array([40.0]), tol=0.6)[0] == -1.0    # no overlap


def test_each_frame_is_mapped_to_its_video_and_a_gone_frame_to_minus_one():
    import pyarrow as pa

    from retrieval.query.dedup_video import video_of

    stored = {10: 1, 11: 1, 12: 2, 30: None}  # frame 30 has no video; frame 20 is gone

    class Store:
        def take(self, table, ids, columns):
            assert table == "frames" and list(ids) == sorted(set(ids))  # one take of the distinct ids
            got = [int(i) for i in ids if int(i) in stored]
            return pa.table({"id": pa.array(got, pa.int64()), "video_id": pa.array([stored[i] for i in got],
                                                                                    pa.int64())})

    ix = type("Ix", (), {"store": Store()})()
    pairs = np.array([[10, 12], [11, 10], [20, 12], [30, 11]])
    np.testing.assert_array_equal(video_of(ix, pairs), [[1, 2], [1, 1], [-1, 2], [-1, 1]])

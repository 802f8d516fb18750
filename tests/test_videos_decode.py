"""Streamed decoding and frame sampling of generated videos (no model): which frames at which times, in pieces,
and what each kind of bad file reports."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("av")

from clipdex.synthetic.videos import make_bad_videos, make_video  # noqa: E402
from indexers.video_decode import SamplingPlan, iter_video, stream_decode  # noqa: E402
from retrieval.errors import InvalidInput  # noqa: E402
from retrieval.io.imageprep import ImagePrep  # noqa: E402

PREP = ImagePrep((24, 24))


def run(path, plan, piece=16):
    """-> (frame indexes, times, pixel shapes, error, info, largest piece)."""
    idx, ts, shapes, err, info, biggest = [], [], [], "missing", None, 0
    for msg in iter_video(str(path), plan, PREP, piece):
        if msg[0] == "info":
            info = msg[1]
        elif msg[0] == "frames":
            idx += msg[1]
            ts += msg[2]
            shapes.append(msg[3].shape)
            biggest = max(biggest, len(msg[1]))
        else:
            err = msg[1]
    return idx, np.array(ts), shapes, err, info, biggest


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    return {"mp4": make_video(root / "a.mp4", 1, 6.0, 10), "mkv25": make_video(root / "b.mkv", 2, 4.0, 25, (96, 64)),
            "webm": make_video(root / "c.webm", 3, 3.0, 8, (48, 48)), "bad": make_bad_videos(root / "bad")}


def test_fps_sampling_takes_the_frame_on_screen_at_each_second(clips):
    idx, t, shapes, err, info, _ = run(clips["mp4"]["path"], SamplingPlan("fps", 1.0))
    assert err is None
    assert idx == [0, 10, 20, 30, 40, 50]
    np.testing.assert_allclose(t, [0, 1, 2, 3, 4, 5], atol=1e-6)
    assert all(s[1:] == (24, 24, 3) for s in shapes)
    assert info.width == 64 and info.height == 48 and info.fps == 10 and info.duration == pytest.approx(6.0)


def test_fractional_fps_and_other_containers(clips):
    idx, t, _, err, info, _ = run(clips["mkv25"]["path"], SamplingPlan("fps", 2.0))
    assert err is None and info.fps == 25
    np.testing.assert_allclose(t, np.arange(8) * 0.5, atol=0.021)  # within one source frame (1/25 s)
    idx, t, _, err, _, _ = run(clips["webm"]["path"], SamplingPlan("fps", 0.5))
    assert err is None
    np.testing.assert_allclose(t, [0, 2], atol=1 / 8)


def test_sampling_faster_than_the_video_keeps_each_frame_once(clips):
    idx, t, _, err, _, _ = run(clips["webm"]["path"], SamplingPlan("fps", 30.0))
    assert err is None
    assert idx == list(range(24))  # 3 s at 8 fps: every frame, none twice
    assert np.all(np.diff(t) > 0)


def test_chunk_sampling_takes_the_middle_of_each_chunk(clips):
    idx, t, _, err, _, _ = run(clips["mp4"]["path"], SamplingPlan("frames", 4))
    assert err is None
    # chunk middles 0.75, 2.25, 3.75, 5.25 s: the frame on screen then started at most 0.1 s earlier
    mids = (np.arange(4) + 0.5) * 6.0 / 4
    assert np.all((mids - t >= -1e-6) & (mids - t < 0.1 + 1e-6))


def test_keyframe_sampling_returns_only_keyframes(clips):
    import av

    with av.open(clips["mp4"]["path"]) as c:
        keys = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
    idx, _, _, err, _, _ = run(clips["mp4"]["path"], SamplingPlan("keyframes", 0))
    assert err is None and len(idx) == len(keys) >= 1


def test_frames_arrive_in_pieces_never_the_whole_video(clips):
    idx, _, shapes, _, _, biggest = run(clips["mkv25"]["path"], SamplingPlan("fps", 25.0), piece=7)
    assert len(idx) == 100 and biggest <= 7 and len(shapes) == 15


@pytest.mark.parametrize("kind, stage, words", [
    ("corrupt", "decode", "not a video"), ("text", "decode", "not a video"), ("audio", "decode", "audio only"),
    ("empty", "read", "empty file")])
def test_bad_files_end_with_an_error_and_no_frames(clips, kind, stage, words):
    idx, _, _, err, _, _ = run(clips["bad"][kind], SamplingPlan())
    assert idx == [] and err[0] == stage and words in err[1]


def test_a_truncated_video_yields_its_first_frames_then_the_error(clips):
    idx, t, _, err, info, _ = run(clips["bad"]["truncated"], SamplingPlan())
    assert info.duration == pytest.approx(8.0)
    assert 1 <= len(idx) < 8 and t.max() < 6
    assert err[0] == "decode" and "truncated" in err[1]


@pytest.mark.parametrize("kw", [dict(fps=0), dict(fps=-1), dict(fps=float("nan")), dict(frames=0), dict(frames=-3),
                                dict(fps=2, frames=3), dict(frames=2, keyframes=True)])
def test_bad_sampling_options_are_refused(kw):
    with pytest.raises(InvalidInput):
        SamplingPlan.from_options(**kw)


def test_sampling_plans_describe_themselves():
    assert SamplingPlan.from_options().describe() == "fps=1"
    assert SamplingPlan.from_options(fps=0.5).describe() == "fps=0.5"
    assert SamplingPlan.from_options(frames=16).describe() == "frames=16"
    assert SamplingPlan.from_options(keyframes=True).describe() == "keyframes"


def test_worker_pool_gives_each_video_the_same_messages_as_inline_decoding(clips):
    jobs = [(0, clips["mp4"]["path"]), (1, clips["bad"]["audio"]), (2, clips["mkv25"]["path"]),
            (3, clips["bad"]["truncated"])]

    def collect(workers):
        out: dict = {}
        for key, msg in stream_decode(jobs, SamplingPlan("fps", 2.0), PREP, workers, piece=5):
            out.setdefault(key, []).append(msg)
        return out

    inline, pooled = collect(0), collect(2)
    assert set(inline) == set(pooled) == {0, 1, 2, 3}
    for key in inline:
        assert [m[0] for m in inline[key]] == [m[0] for m in pooled[key]]
        assert inline[key][-1] == pooled[key][-1]  # same ending (error or None)
        a = [m for m in inline[key] if m[0] == "frames"]
        b = [m for m in pooled[key] if m[0] == "frames"]
        for x, y in zip(a, b):
            assert x[1] == y[1] and np.array_equal(x[3], y[3])

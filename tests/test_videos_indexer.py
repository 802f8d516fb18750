"""The video indexer on generated videos with the tiny model: moments found by stills, tables, errors and partial
videos, incremental re-runs, replaced videos, crash repair and pruning."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("av")

from clipdex.synthetic.videos import make_video, make_video_corpus, scene_still  # noqa: E402
from indexers.video_decode import SamplingPlan  # noqa: E402
from indexers.videos import VideoIndexOptions, index_videos  # noqa: E402
from retrieval.index.directory import create_index, open_index  # noqa: E402
from retrieval.io.sources import VIDEO_EXTENSIONS, discover  # noqa: E402
from retrieval.query.video import VideoSearchOptions, search_videos  # noqa: E402
from retrieval.store.base import arrow_to_vectors  # noqa: E402

TINY = "clipdex-tiny"


def _index(path, sources, **kw):
    with create_index(path, model=TINY) as ix:
        return index_videos(ix, discover(sources, VIDEO_EXTENSIONS), VideoIndexOptions(workers=0, **kw))


def _rows(ix, table, columns):
    return ix.store.take(table, np.arange(ix.store.max_id(table) + 1), columns).to_pylist()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("vidx")
    good, bad = make_video_corpus(root)
    summary = _index(root / "ix", [root / "good", root / "bad"])
    return root, good, bad, summary


@pytest.mark.slow
def test_a_still_finds_its_video_first_at_the_right_moment(built):
    root, good, _, _ = built
    ix = open_index(root / "ix")
    for v in good:
        for t in (0.3, v["duration"] / 2 + 0.25, v["duration"] - 0.6):
            for pool in ("max", "query-scoring"):
                # alpha 0.1 and tau 1e-3: these scenes of random colour blocks are not drawings clipdex-tiny was
                # trained on, so their cosines sit close together; the first-stage (mean-pooled) term must not drown
                # the frame match, and query scoring needs a temperature on that scale to pick frames (defaults are
                # tested on synthetic vectors in test_videos_search.py)
                opts = VideoSearchOptions(pool=pool, alpha=0.1, tau=1e-3)
                res = search_videos(ix, image=scene_still(v, t), k=3, options=opts)
                assert res.column("path")[0].as_py() == v["path"], (v["path"], t, pool)
                assert abs(res.column("t_best")[0].as_py() - t) <= 1.0  # one sampling interval at --fps 1


def test_mean_pooling_dilutes_a_moment_but_the_rerank_keeps_the_video_near_the_top(built):
    """Mean pooling scores the whole video (a one-second scene of six counts for a sixth): not a moment finder, but
    CLIPRerank's max-over-frames term keeps the right video in the top 3 with the right time."""
    root, good, _, _ = built
    ix = open_index(root / "ix")
    for v in good:
        t = v["duration"] / 2 + 0.25
        res = search_videos(ix, image=scene_still(v, t), k=3, options=VideoSearchOptions(pool="mean"))
        paths = res.column("path").to_pylist()
        assert v["path"] in paths
        assert abs(res.column("t_best")[paths.index(v["path"])].as_py() - t) <= 1.0


def test_tables_hold_one_row_per_sampled_frame_and_per_video(built):
    root, good, _, summary = built
    assert summary.added == len(good) + 1  # the good videos and the partial truncated one
    ix = open_index(root / "ix")
    videos = {r["path"]: r for r in _rows(ix, "videos", ["id", "path", "duration", "fps", "n_frames", "width",
                                                         "height", "partial", "sampling", "hash"])}
    frames = ix.store.take("frames", np.arange(ix.store.max_id("frames") + 1), ["video_id", "t", "vector"])
    for v in good:
        row = videos[v["path"]]
        assert row["duration"] == pytest.approx(v["duration"], abs=0.01) and row["fps"] == pytest.approx(v["fps"])
        assert (row["width"], row["height"]) == v["size"] and not row["partial"] and row["sampling"] == "fps=1"
        assert row["n_frames"] == int(np.ceil(v["duration"])) and len(row["hash"]) == 32
        mine = frames.filter(np.array(frames.column("video_id").to_pylist()) == row["id"])
        assert sorted(mine.column("t").to_pylist()) == pytest.approx(list(range(row["n_frames"])), abs=1 / v["fps"])
        fv, _ = arrow_to_vectors(mine.column("vector"), ix.dim)
        pooled, _ = arrow_to_vectors(ix.store.take("videos", [row["id"]], ["vector"]).column("vector"), ix.dim)
        mean = fv.mean(0)
        np.testing.assert_allclose(pooled[0], mean / np.linalg.norm(mean), atol=1e-5)
    assert summary.frames == ix.store.count("frames")


def test_bad_files_are_recorded_and_a_truncated_video_keeps_its_first_frames(built):
    root, _, bad, summary = built
    ix = open_index(root / "ix")
    errors = {r["path"]: r for r in _rows(ix, "errors", ["path", "stage", "reason", "source_table"])}
    assert set(errors) == set(bad.values())
    assert all(r["source_table"] == "videos" for r in errors.values())
    assert errors[bad["empty"]]["stage"] == "read"
    assert "audio only" in errors[bad["audio"]]["reason"] and "not a video" in errors[bad["text"]]["reason"]
    assert "partial, kept" in errors[bad["truncated"]]["reason"]
    trunc = [r for r in _rows(ix, "videos", ["path", "partial", "n_frames"]) if r["path"] == bad["truncated"]]
    assert len(trunc) == 1 and trunc[0]["partial"] and 1 <= trunc[0]["n_frames"] < 8
    assert summary.errors == 5 and summary.partial == 1


def test_a_second_run_changes_nothing(built, tmp_path):
    root, good, bad, _ = built
    copy = tmp_path / "ix"
    shutil.copytree(root / "ix", copy)
    before = {t: open_index(copy).store.count(t) for t in ("videos", "frames", "errors")}
    s = _index(copy, [root / "good", root / "bad"])
    assert (s.added, s.updated, s.frames, s.errors) == (0, 0, 0, 0)
    assert s.unchanged == len(good) + 1 and s.known_errors == 4
    assert {t: open_index(copy).store.count(t) for t in before} == before


def test_a_changed_video_replaces_its_row_and_frames(tmp_path):
    src = tmp_path / "src"
    a = make_video(src / "a.mp4", 11, 3.0, 10)
    make_video(src / "b.mp4", 12, 4.0, 10)
    _index(tmp_path / "ix", [src])
    rows = _rows(open_index(tmp_path / "ix"), "videos", ["id", "path"])
    old_id = [r["id"] for r in rows if r["path"] == a["path"]][0]
    a2 = make_video(src / "a.mp4", 13, 5.0, 10)  # new content, new length
    os.utime(a2["path"], (1e9, 1e9))
    s = _index(tmp_path / "ix", [src])
    assert (s.updated, s.added, s.unchanged) == (1, 0, 1)
    ix = open_index(tmp_path / "ix")
    rows = _rows(ix, "videos", ["id", "path", "duration"])
    assert len(rows) == 2 and old_id not in [r["id"] for r in rows]
    assert ix.store.count("frames", f"video_id = {old_id}") == 0
    assert ix.store.count("frames") == 5 + 4
    res = search_videos(ix, image=scene_still(a2, 4.2), k=1)
    assert res.column("path")[0].as_py() == a["path"] and res.column("t_best")[0].as_py() == pytest.approx(4.0)


def test_changing_the_sampling_reindexes_and_errors_are_retried_only_when_asked(tmp_path):
    src = tmp_path / "src"
    make_video(src / "a.mp4", 21, 4.0, 10)
    (src / "bad.mp4").write_bytes(b"nope" * 10)
    _index(tmp_path / "ix", [src])
    s = _index(tmp_path / "ix", [src], sampling=SamplingPlan("frames", 3))
    assert s.updated == 1 and s.known_errors == 1 and s.errors == 0
    assert open_index(tmp_path / "ix").store.count("frames") == 3
    s = _index(tmp_path / "ix", [src], sampling=SamplingPlan("frames", 3), retry_errors=True)
    assert s.unchanged == 1 and s.errors == 1
    assert open_index(tmp_path / "ix").store.count("errors") == 1  # the retried error replaced the old row


def test_an_interrupted_run_is_repaired_orphan_frames_and_duplicate_rows_removed(tmp_path):
    src = tmp_path / "src"
    make_video(src / "a.mp4", 31, 3.0, 10)
    _index(tmp_path / "ix", [src])
    with open_index(tmp_path / "ix", writable=True) as ix:
        # a crash after frames were committed but before their video row: frames of an unknown video
        ix.add_vectors("frames", np.ones((2, ix.dim), np.float32), {"video_id": [99, 99], "t": [0.0, 1.0]})
        # a crash between committing a replacement row and deleting the old one: two rows for one path
        frames = ix.store.take("frames", [0, 1, 2])
        frames = frames.set_column(1, "video_id", pa.array([5, 5, 5], pa.int64()))
        ix.add_rows("frames", frames.set_column(0, "id", pa.array([10, 11, 12], pa.int64())))
        ix.add_rows("videos", ix.store.take("videos", [0]).set_column(0, "id", pa.array([5], pa.int64())))
    s = _index(tmp_path / "ix", [src])
    assert s.unchanged == 1 and s.added == 0
    ix = open_index(tmp_path / "ix")
    assert ix.store.count("videos") == 1 and ix.store.count("frames", "video_id = 99") == 0
    assert ix.store.count("frames", "video_id = 5") == 3  # the newest row and its frames win
    assert ix.store.count("frames") == 3 and ix.store.count("frames", "video_id = 0") == 0


def test_prune_removes_videos_gone_from_the_source(tmp_path):
    src = tmp_path / "src"
    make_video(src / "a.mp4", 41, 2.0, 10)
    b = make_video(src / "b.mp4", 42, 3.0, 10)
    _index(tmp_path / "ix", [src])
    os.remove(b["path"])
    s = _index(tmp_path / "ix", [src], prune=True)
    assert s.removed == 1
    ix = open_index(tmp_path / "ix")
    assert [r["path"] for r in _rows(ix, "videos", ["path"])] == [str(src / "a.mp4")]
    assert ix.store.count("frames") == 2


def test_worker_processes_and_small_batches_give_the_same_rows(tmp_path):
    src = tmp_path / "src"
    make_video(src / "a.mkv", 51, 5.0, 12)
    make_video(src / "b.mp4", 52, 3.0, 10)
    found = discover([src], VIDEO_EXTENSIONS)
    out = []
    for name, workers, batch in (("inline", 0, 64), ("pool", 2, 3)):
        with create_index(tmp_path / name, model=TINY) as ix:
            index_videos(ix, found, VideoIndexOptions(workers=workers, batch_size=batch))
            rows = ix.store.take("frames", np.arange(ix.store.count("frames")), ["path", "t", "vector"])
            order = np.lexsort((rows.column("t").to_numpy(), np.array(rows.column("path").to_pylist())))
            out.append((np.array(rows.column("path").to_pylist())[order], rows.column("t").to_numpy()[order],
                        arrow_to_vectors(rows.column("vector"), ix.dim)[0][order]))
    assert np.array_equal(out[0][0], out[1][0]) and np.allclose(out[0][1], out[1][1])
    np.testing.assert_allclose(out[0][2], out[1][2], atol=1e-5)

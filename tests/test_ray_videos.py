"""``clipdex index videos --engine ray``: a video per task in a pool of embedding actors that write its frames as
Lance fragments, the driver committing them before the video's row: the same frames (counted: each (video, frame)
once), videos rows, partial videos and errors as the local engine; a re-run reads nothing; a replaced video's old
rows go. Slow (Ray starts processes); two CPUs, a capped object store, loopback only."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("av")
ray = pytest.importorskip("ray", reason="the [ray] extra (in [dev])")

from clipdex.synthetic.videos import make_video_corpus  # noqa: E402
from indexers.videos import VideoIndexOptions, index_videos  # noqa: E402
from retrieval.errors import InvalidInput  # noqa: E402
from retrieval.index.directory import create_index  # noqa: E402
from retrieval.io.sources import VIDEO_EXTENSIONS, discover  # noqa: E402

RAY_INIT = dict(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
OPTS = VideoIndexOptions(workers=0, batch_size=8)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(**RAY_INIT)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("vids")
    make_video_corpus(root)
    return root


def table(ix, name: str) -> list[dict]:
    return pa.Table.from_batches(list(ix.store.scan(name))).to_pylist() if ix.store.count(name) else []


def frames(ix) -> dict:
    by_path = {r["id"]: os.path.basename(r["path"]) for r in table(ix, "videos")}
    listed = table(ix, "frames")
    out = {(by_path[r["video_id"]], r["frame_index"]): r for r in listed}  # every frame belongs to a video row
    assert len(out) == len(listed) == ix.store.count("frames")  # no frame stored twice
    return out


def videos(ix) -> dict:
    listed = table(ix, "videos")
    out = {os.path.basename(r["path"]): r for r in listed}
    assert len(out) == len(listed)
    return out


def errors(ix) -> list:
    return sorted((os.path.basename(e["path"]), e["stage"], e["reason"]) for e in table(ix, "errors"))


@pytest.mark.slow
def test_ray_and_local_engines_store_the_same_frames_videos_and_errors(tmp_path, corpus, local_ray):
    from indexers.ray_videos import index_videos_ray

    found = discover([corpus / "good", corpus / "bad"], VIDEO_EXTENSIONS)
    with create_index(tmp_path / "local", model="clipdex-tiny") as ix:
        local_sum = index_videos(ix, found, OPTS).as_dict()
        lf, lv, le = frames(ix), videos(ix), errors(ix)
    with create_index(tmp_path / "ray", model="clipdex-tiny") as ix:
        ray_sum = index_videos_ray(ix, found, OPTS).as_dict()
        rf, rv, re_ = frames(ix), videos(ix), errors(ix)
        again = index_videos_ray(ix, found, OPTS).as_dict()
        assert ix.store.count("frames") == len(rf)
    for k in ("added", "errors", "partial", "frames", "unchanged", "known_errors"):
        assert local_sum[k] == ray_sum[k], k
    assert ray_sum["frames"] > 0 and ray_sum["partial"] >= 1
    assert lf.keys() == rf.keys() and lv.keys() == rv.keys() and le == re_
    for k, r in lf.items():
        assert r["t"] == rf[k]["t"]
        np.testing.assert_allclose(r["vector"], rf[k]["vector"], atol=1e-5)
    for k, r in lv.items():
        for col in ("n_frames", "duration", "fps", "partial", "hash", "sampling", "width", "height"):
            assert r[col] == rv[k][col], (k, col)
        np.testing.assert_allclose(r["vector"], rv[k]["vector"], atol=1e-5)
    assert (again["added"], again["frames"]) == (0, 0) and again["unchanged"] == ray_sum["added"]


@pytest.mark.slow
def test_a_replaced_video_loses_its_old_rows(tmp_path, corpus, local_ray):
    from indexers.ray_videos import index_videos_ray

    src = tmp_path / "good"
    shutil.copytree(corpus / "good", src)
    with create_index(tmp_path / "ix", model="clipdex-tiny") as ix:
        index_videos_ray(ix, discover([src], VIDEO_EXTENSIONS), OPTS)
        before = videos(ix)
        names = sorted(before)
        shutil.copyfile(src / names[1], src / names[0])  # the first video now holds the second's content
        s = index_videos_ray(ix, discover([src], VIDEO_EXTENSIONS), OPTS)
        after, got = videos(ix), frames(ix)
        assert s.updated == 1 and s.added == 0
        assert after[names[0]]["hash"] == before[names[1]]["hash"]
        assert sum(1 for f, _ in got if f == names[0]) == after[names[0]]["n_frames"]


def test_the_faiss_backend_is_refused_in_one_line(tmp_path, corpus):
    from indexers.ray_videos import index_videos_ray

    with create_index(tmp_path / "f", model="clipdex-tiny", backend="faiss") as ix:
        with pytest.raises(InvalidInput, match="writes Lance fragments.*faiss backend"):
            index_videos_ray(ix, discover([corpus / "good"], VIDEO_EXTENSIONS))


@pytest.mark.slow
def test_cli_index_videos_engine_ray(tmp_path, corpus, local_ray):
    import json

    from click.testing import CliRunner

    from cli.main import cli

    res = CliRunner().invoke(cli, ["index", "videos", str(corpus / "good"), "--index", str(tmp_path / "ix"),
                                   "--model", "clipdex-tiny", "--engine", "ray", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["added"] == len(discover([corpus / "good"], VIDEO_EXTENSIONS).items) and summary["frames"] > 0

"""Video results through clipdex serve: the best moment (t_best) and segments, a thumbnail of that moment, frame
results with their time, and the original video streamed with range requests so a player can seek."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("av")

from clipdex.synthetic.videos import make_video  # noqa: E402
from clipdex.synthetic.videos import scene_still as still  # noqa: E402
from tests.serve_helpers import client  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from click.testing import CliRunner

    from cli.main import cli

    root = tmp_path_factory.mktemp("vserve")
    vids = [make_video(root / "src" / "a.mp4", 61, 5.0, 10), make_video(root / "src" / "b.mkv", 62, 4.0, 12, (96, 64))]
    res = CliRunner().invoke(cli, ["index", "videos", str(root / "src"), "--index", str(root / "ix.clipdex"),
                                   "--model", "clipdex-tiny", "--workers", "0", "--fps", "2"])
    assert res.exit_code == 0, res.output
    with client(root / "ix.clipdex", root / "cache") as c:
        yield c, vids, root


def upload(c, image_path, **fields):
    with open(image_path, "rb") as f:
        r = c.post("/api/search", files={"image": ("still.png", f.read(), "image/png")},
                   data={k: str(v) for k, v in fields.items()})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_a_still_finds_its_video_at_the_right_moment_with_a_thumbnail_of_that_moment(served, tmp_path):
    c, vids, _ = served
    v, t = vids[0], 3.2
    # alpha 0.1: the random tiny model puts both videos' pooled vectors close together (see test_videos_cli.py)
    top = upload(c, still(v, t, tmp_path), table="videos", k=2, alpha=0.1)[0]
    assert top["path"] == v["path"] and int(top["t_best"]) == int(t) and top["segments"]  # the still's scene
    assert top["thumbnail"] == f"/api/thumb/ix/videos/{top['id']}?t={top['t_best']:.3f}"
    r = c.get(top["thumbnail"])
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    assert c.get(top["thumbnail"].split("?")[0], params={"t": 0}).headers["etag"] != r.headers["etag"]


def test_frame_results_carry_their_time_and_a_thumbnail(served, tmp_path):
    c, vids, _ = served
    top = upload(c, still(vids[1], 2.6, tmp_path), table="frames", k=3)[0]
    assert top["path"] == vids[1]["path"] and int(top["t"]) == 2  # a frame of the still's one-second scene
    assert c.get(top["thumbnail"]).headers["content-type"] == "image/jpeg"


def test_the_video_file_is_served_with_range_requests(served):
    c, vids, _ = served
    hits = c.post("/api/search", json={"like_id": 0, "table": "videos", "k": 2}).json()["results"]
    hit = next(h for h in hits if h["id"] == 0)
    whole = open(hit["path"], "rb").read()
    r = c.get(hit["file"], headers={"Range": "bytes=100-299"})
    assert r.status_code == 206 and r.content == whole[100:300] and r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-range"] == f"bytes 100-299/{len(whole)}"


def test_bad_video_options_are_400s(served):
    c, _, _ = served
    r = c.post("/api/search", json={"like_id": 0, "table": "videos", "pool": "median"})
    assert r.status_code == 400 and "unknown pooling" in r.json()["error"]


def test_a_thumbnail_time_past_any_video_is_a_4xx_not_a_500(served):
    c, _, _ = served
    hit = c.post("/api/search", json={"like_id": 0, "table": "videos", "k": 1}).json()["results"][0]
    base = hit["thumbnail"].split("?")[0]
    for t in ("1e308", "1e10", "inf"):
        r = c.get(base, params={"t": t})
        assert r.status_code == 422 and "t: Input should be" in r.json()["error"], (t, r.text)
    assert c.get(base, params={"t": "1e6"}).content[:2] == b"\xff\xd8"   # past the end: the last frame


def test_a_frame_of_a_video_replaced_since_indexing_is_not_served(served, tmp_path):
    c, vids, root = served
    top = upload(c, still(vids[1], 1.2, tmp_path), table="frames", k=1)[0]
    assert c.get(top["file"]).status_code == 200
    original, st = open(top["path"], "rb").read(), os.stat(top["path"])
    try:
        with open(top["path"], "ab") as f:
            f.write(b"\0" * 10)
        r = c.get(top["file"])
        assert r.status_code == 404 and "changed since it was indexed" in r.json()["error"]
    finally:
        with open(top["path"], "wb") as f:
            f.write(original)
        os.utime(top["path"], ns=(st.st_atime_ns, st.st_mtime_ns))   # as indexed again, for the other tests
    assert c.get(top["file"]).status_code == 200

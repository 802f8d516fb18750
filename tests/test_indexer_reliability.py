"""Reliability of the indexers and of query inputs (issue 14): odd file names, FIFOs and devices, odd video files
(a still image named .mp4, damaged data mid-stream, a damaged codec header), interrupted embedding runs, the model
pin, a kill between the frames and videos commits. Kill points are events (a patched
commit that raises), never sleeps; a FIFO that would hang an unfixed indexer is bounded by an alarm."""
from __future__ import annotations

import json
import logging
import os
import signal
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipdex.synthetic import COLORS, draw_shape
from clipdex.synthetic.embeddings import clustered
from clipdex.synthetic.videos import make_video, synthetic_video_index
from indexers.embedding_sources import discover_embeddings
from indexers.embeddings import index_embeddings
from indexers.images import ImageIndexOptions, index_images
from indexers.text_sources import discover_texts
from indexers.texts import TextIndexOptions, index_texts
from indexers.videos import VideoIndexOptions, index_videos
from retrieval.errors import InvalidInput, ModelMismatch
from retrieval.index.directory import Index, create_index, open_index
from retrieval.io.files import fs_path, stored_path
from retrieval.io.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, discover
from retrieval.query.search import load_query_image, search
from retrieval.query.video import search_videos
from retrieval.store.base import arrow_to_vectors

TINY = "clipdex-tiny"
NON_UTF8 = b"caf\xe9"  # latin-1 bytes: not a UTF-8 file name


class Blocked(BaseException):
    """Raised by the alarm: not an OSError (which an indexer records and goes past), so nothing swallows it."""


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the suite) if something blocks on a FIFO: an alarm that keeps firing, not a sleep."""
    def boom(*_):
        raise Blocked("blocked: something opened a FIFO and waited for a writer")

    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, 120, 5)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def ix(tmp_path):
    index = create_index(tmp_path / "ix", model=TINY)
    yield index
    index.close()


@pytest.fixture(params=["lance", "faiss"])
def both(request, tmp_path):
    """An index of each backend."""
    index = create_index(tmp_path / "ix", model=TINY, backend=request.param)
    yield index
    index.close()


def _table(ix, name, cols):
    if not ix.store.has_table(name) or not ix.store.count(name):
        return []
    return pa.Table.from_batches(list(ix.store.scan(name, cols))).to_pylist()


def _odd_name(folder, suffix: str) -> str:
    """The path (as Python gives it: surrogateescape) of ``folder/café<suffix>`` with a latin-1 name."""
    return os.fsdecode(os.path.join(os.fsencode(folder), NON_UTF8 + suffix.encode()))


def _images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    draw_shape("circle", COLORS["red"], 64).save(folder / "ok.png")
    draw_shape("square", COLORS["blue"], 64).save(_odd_name(folder, ".png"), format="PNG")
    return folder


def _index_videos(ix, *sources):
    return index_videos(ix, discover([str(s) for s in sources], VIDEO_EXTENSIONS), VideoIndexOptions(workers=0))


def _index_images(ix, *sources):
    return index_images(ix, discover([str(s) for s in sources], IMAGE_EXTENSIONS),
                        ImageIndexOptions(workers=0, batch_size=8))


# -- stored paths ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["plain/a.png", "caf\udce9.png", "a\\b.png", "lit\\xe9.png", "x\\\\xe9\udcff",
                                  "\\", "emoji 😀.jpg"])
def test_stored_paths_round_trip_and_encode_as_utf8(name):
    s = stored_path(name)
    s.encode("utf-8")
    assert fs_path(s) == name
    if name.isprintable() and "\\" not in name:
        assert s == name  # ordinary names are stored as they are


def test_stored_paths_of_different_names_differ():
    names = ["caf\udce9.png", "caf\\xe9.png", "caf\\\\xe9.png", "café.png"]
    assert len({stored_path(n) for n in names}) == len(names)


# -- #5: a file name that is not UTF-8 ---------------------------------------------------------------------------------
def test_images_with_a_non_utf8_name_are_indexed_losslessly_and_a_rerun_skips_them(both, tmp_path):
    ix = both
    src = _images(tmp_path / "src")
    s = _index_images(ix, src)
    assert (s.added, s.errors) == (2, 0)
    paths = {fs_path(r["path"]) for r in _table(ix, "images", ["path"])}
    assert paths == {str(src / "ok.png"), _odd_name(src, ".png")}
    assert all(os.path.isfile(p) for p in paths)  # the stored name opens the file
    s = _index_images(ix, src)
    assert (s.added, s.unchanged, s.errors) == (0, 2, 0)


def test_texts_with_a_non_utf8_name_are_indexed_and_a_rerun_skips_them(both, tmp_path):
    ix = both
    src = tmp_path / "texts"
    src.mkdir()
    (src / "ok.txt").write_text("a red circle")
    with open(_odd_name(src, ".txt"), "w") as f:
        f.write("a blue square")
    with open(_odd_name(src, ".jsonl"), "w") as f:
        f.write(json.dumps({"text": "a green star"}) + "\n")
    with open(_odd_name(src, ".parquet"), "wb") as f:  # pyarrow cannot open such a name itself
        pq.write_table(pa.table({"text": ["a yellow triangle"]}), f)
    opts = TextIndexOptions()
    s = index_texts(ix, discover_texts([str(src)]), opts)
    assert (s.files, s.rows, s.errors) == (4, 4, 0)
    rows = {fs_path(r["source"]): r["text"] for r in _table(ix, "texts", ["source", "text"])}
    assert rows[_odd_name(src, ".txt")] == "a blue square" and rows[_odd_name(src, ".parquet")] == "a yellow triangle"
    s = index_texts(ix, discover_texts([str(src)]), opts)
    assert (s.files, s.unchanged) == (0, 4)


# -- #10: FIFOs and devices are never opened ---------------------------------------------------------------------------
def test_a_fifo_in_an_image_folder_and_as_the_source_is_an_error_row(ix, tmp_path, no_hang):
    src = _images(tmp_path / "src")
    os.mkfifo(src / "pipe.png")
    os.mkfifo(tmp_path / "alone.jpg")
    s = _index_images(ix, src, tmp_path / "alone.jpg")
    assert (s.added, s.errors) == (2, 2)
    errs = {fs_path(e["path"]): e for e in _table(ix, "errors", ["path", "stage", "reason"])}
    assert set(errs) == {str(src / "pipe.png"), str(tmp_path / "alone.jpg")}
    assert all(e["stage"] == "read" and "FIFO" in e["reason"] for e in errs.values())
    s = _index_images(ix, src, tmp_path / "alone.jpg")
    assert (s.errors, s.known_errors, s.unchanged) == (0, 2, 2)


def test_a_fifo_among_text_files_is_an_error_row_and_a_named_one_is_refused(ix, tmp_path, no_hang):
    src = tmp_path / "texts"
    src.mkdir()
    (src / "ok.txt").write_text("a red circle")
    os.mkfifo(src / "pipe.txt")
    s = index_texts(ix, discover_texts([str(src)]), TextIndexOptions())
    assert (s.rows, s.errors) == (1, 1)
    (err,) = _table(ix, "errors", ["path", "stage", "reason"])
    assert err["path"] == str(src / "pipe.txt") and err["stage"] == "read" and "FIFO" in err["reason"]
    with pytest.raises(InvalidInput, match="FIFO"):
        discover_texts([str(src / "pipe.txt")])


# -- #4: the query image gets the indexer's checks ---------------------------------------------------------------------
def test_a_query_image_must_be_a_regular_file_within_the_size_limit(ix, tmp_path, no_hang):
    img = tmp_path / "q.png"
    draw_shape("circle", COLORS["red"], 64).save(img)
    os.mkfifo(tmp_path / "pipe.png")
    for path, why in [("/dev/zero", "character device"), (tmp_path / "pipe.png", "FIFO"), (tmp_path, "folder")]:
        with pytest.raises(InvalidInput, match=why) as exc:
            search(ix, image=str(path))
        assert "\n" not in str(exc.value)
    with pytest.raises(InvalidInput, match="too large"):
        load_query_image(img, max_bytes=100)
    assert load_query_image(img, max_bytes=1 << 20).size == (64, 64)


def test_a_huge_image_is_logged_not_printed_as_a_python_warning(ix, tmp_path, monkeypatch, caplog):
    src = tmp_path / "src"
    src.mkdir()
    draw_shape("circle", COLORS["red"], 64).save(src / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 64 x 64 = 4096: past the limit, below twice it
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        s = _index_images(ix, src)
    assert s.added == 1
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert any("very large image" in r.getMessage() for r in caplog.records)


# -- #3: an interrupted embeddings run resumes; bad Parquet rows go to errors ------------------------------------------
def _npy_source(folder, n=250, d=16):
    folder.mkdir(parents=True)
    x = clustered(n, d, seed=3)
    x[120] = 0.0  # one bad vector, in the second block
    np.save(folder / "a.npy", x)
    return x


def test_embeddings_killed_after_a_block_resume_where_they_stopped(tmp_path, monkeypatch):
    x = _npy_source(tmp_path / "src")
    parts = discover_embeddings(tmp_path / "src")
    ix = create_index(tmp_path / "ix", dim=16, model="none")
    calls = {"images": 0}
    real_add = Index.add_rows

    def killed_on_the_second_block(self, table, rows):
        if table == "images":
            calls["images"] += 1
            if calls["images"] == 2:
                raise KeyboardInterrupt  # killed while committing the second block
        real_add(self, table, rows)

    monkeypatch.setattr(Index, "add_rows", killed_on_the_second_block)
    with pytest.raises(KeyboardInterrupt):
        index_embeddings(ix, parts, batch_rows=100)
    ix.close()
    monkeypatch.undo()
    with open_index(tmp_path / "ix", writable=True) as ix:
        assert ix.store.count("images") == 100 and ix.store.count("errors") == 1  # the block's error row landed
        s = index_embeddings(ix, parts, batch_rows=100)
        assert (s.skipped_files, s.added, s.errors) == (0, 149, 1)
        rows = _table(ix, "images", ["source_row"])
        assert sorted(r["source_row"] for r in rows) == [i for i in range(250) if i != 120]  # each row once
        assert [e["path"].rsplit("#", 1)[1] for e in _table(ix, "errors", ["path"])] == ["120"]
        D, I = ix.search_vectors("images", x[[249]], 1)
        assert D[0, 0] > 0.9999
        s = index_embeddings(ix, parts, batch_rows=100)
        assert (s.skipped_files, s.added) == (1, 0)


def test_a_parquet_row_of_another_dimension_is_an_error_row_and_the_rest_is_indexed(tmp_path):
    x = clustered(300, 16, seed=5)
    vecs = [list(map(float, v)) for v in x]
    vecs[250] = [1.0, 2.0, 3.0, 4.0]
    vecs[10] = None
    pq.write_table(pa.table({"vector": pa.array(vecs, pa.list_(pa.float32())), "url": [f"u{i}" for i in range(300)]}),
                   tmp_path / "v.parquet", row_group_size=64)
    with create_index(tmp_path / "ix", dim=16, model="none") as ix:
        s = index_embeddings(ix, discover_embeddings(tmp_path / "v.parquet"), batch_rows=128)
        assert (s.added, s.errors) == (298, 2)
        errs = {e["path"].rsplit("#", 1)[1]: e["reason"] for e in _table(ix, "errors", ["path", "reason"])}
        assert errs == {"10": "vector is null", "250": "vector has 4 values, not 16"}
        s = index_embeddings(ix, discover_embeddings(tmp_path / "v.parquet"), batch_rows=128)
        assert (s.skipped_files, s.added) == (1, 0)


# -- #7: the model pin holds for precomputed embeddings ----------------------------------------------------------------
def test_embeddings_are_refused_unless_their_model_is_the_index_model(tmp_path, tiny):
    np.save(tmp_path / "a.npy", clustered(20, tiny.dim, seed=1))
    parts = discover_embeddings(tmp_path / "a.npy")
    with create_index(tmp_path / "tiny", model=TINY) as ix:
        with pytest.raises(ModelMismatch):
            index_embeddings(ix, parts, model="none")
        assert not ix.store.has_table("images") or ix.store.count("images") == 0
        assert index_embeddings(ix, parts, model=TINY).added == 20
    with create_index(tmp_path / "none", dim=tiny.dim, model="none") as ix:
        with pytest.raises(ModelMismatch):
            index_embeddings(ix, parts, model=TINY)
        assert index_embeddings(ix, parts, model="none").added == 20


# -- searching through a path closes the index it opened ---------------------------------------------------------------
def test_search_by_path_closes_the_index_it_opens(tmp_path, monkeypatch):
    with create_index(tmp_path / "ix", dim=8, model="none") as ix:
        ix.add_vectors("images", clustered(10, 8, seed=2))
    synthetic_video_index(tmp_path / "vx", 6, 4)[0].close()
    closed = []
    real_close = Index.close
    monkeypatch.setattr(Index, "close", lambda self: (closed.append(self.path), real_close(self)))
    res = search(str(tmp_path / "ix"), vectors=clustered(1, 8, seed=2), k=3)
    assert len(res) == 3 and closed == [tmp_path / "ix"]
    res = search_videos(tmp_path / "vx", vectors=clustered(1, 16, seed=2), k=2)
    assert len(res) == 2 and closed == [tmp_path / "ix", tmp_path / "vx"]


# -- video files and video search (#5, #9, #10, #14) -----------------------------------------------------------
def test_a_video_with_a_non_utf8_name_is_indexed_and_a_fifo_beside_it_is_an_error_row(ix, tmp_path, no_hang):
    pytest.importorskip("av")
    src = tmp_path / "src"
    make_video(src / "ok.mp4", 1, 2.0, 10)
    odd = os.fsdecode(os.path.join(os.fsencode(src), b"caf\xe9.mp4"))
    os.rename(src / "ok.mp4", odd)
    make_video(src / "ok.mp4", 2, 2.0, 10)
    os.mkfifo(src / "pipe.mkv")
    s = _index_videos(ix, src)
    assert (s.added, s.errors) == (2, 1)
    assert {fs_path(r["path"]) for r in _table(ix, "videos", ["path"])} == {odd, str(src / "ok.mp4")}
    assert {fs_path(r["path"]) for r in _table(ix, "frames", ["path"])} == {odd, str(src / "ok.mp4")}
    (err,) = _table(ix, "errors", ["path", "reason"])
    assert err["path"] == str(src / "pipe.mkv") and "FIFO" in err["reason"]
    s = _index_videos(ix, src)
    assert (s.unchanged, s.known_errors, s.added) == (2, 1, 0)


def test_odd_video_files_are_errors_or_partial_never_silent(ix, tmp_path):
    pytest.importorskip("av")
    src = tmp_path / "src"
    src.mkdir()
    draw_shape("circle", COLORS["red"]).save(src / "still.mp4", format="PNG")  # a PNG renamed .mp4
    make_video(src / "holed.mkv", 5, 10.0, 25, size=(480, 360))  # large enough for 30 KB to be mid-stream data
    data = bytearray((src / "holed.mkv").read_bytes())
    mid = len(data) // 2
    data[mid:mid + 30_000] = bytes(30_000)  # 30 KB zeroed in the middle
    (src / "holed.mkv").write_bytes(bytes(data))
    make_video(tmp_path / "c.mp4", 6, 3.0, 10)
    data = (tmp_path / "c.mp4").read_bytes()
    (src / "damaged.mp4").write_bytes(data.replace(b"minf", b"min\x09", 1))  # the box holding the codec header
    s = _index_videos(ix, src)
    errs = {os.path.basename(e["path"]): e["reason"] for e in _table(ix, "errors", ["path", "reason"])}
    videos = {os.path.basename(v["path"]): v for v in _table(ix, "videos", ["path", "partial", "n_frames"])}
    assert set(errs) == {"still.mp4", "holed.mkv", "damaged.mp4"} and set(videos) == {"holed.mkv"}
    assert "not a video" in errs["still.mp4"]
    assert "corrupt" in errs["damaged.mp4"] and "unsupported codec" not in errs["damaged.mp4"]
    assert videos["holed.mkv"]["partial"] and 1 <= videos["holed.mkv"]["n_frames"] <= 10
    assert errs["holed.mkv"].startswith("partial, kept") and "damaged" in errs["holed.mkv"]
    assert (s.added, s.partial, s.errors) == (1, 1, 3)


def test_video_search_skips_frames_whose_video_row_a_kill_left_out(both, tmp_path, monkeypatch):
    ix = both
    pytest.importorskip("av")
    src = tmp_path / "src"
    make_video(src / "a.mp4", 1, 3.0, 10)
    _index_videos(ix, src)
    make_video(src / "b.mp4", 2, 3.0, 10)
    real_add = Index.add_rows

    def killed_before_the_videos_row(self, table, rows):
        if table == "videos":
            raise KeyboardInterrupt  # killed after b's frames were committed, before its row
        real_add(self, table, rows)

    monkeypatch.setattr(Index, "add_rows", killed_before_the_videos_row)
    with pytest.raises(KeyboardInterrupt):
        _index_videos(ix, src)
    monkeypatch.undo()
    assert {os.path.basename(r["path"]) for r in _table(ix, "frames", ["path"])} == {"a.mp4", "b.mp4"}
    frames = ix.store.scan("frames", ["path", "vector"])
    table = pa.Table.from_batches(list(frames))
    orphan = [i for i, p in enumerate(table.column("path").to_pylist()) if p.endswith("b.mp4")]
    q, _ = arrow_to_vectors(table.column("vector").take(orphan[:1]), ix.dim)  # a query that best matches b
    res = search_videos(ix, vectors=q, k=5)
    assert [os.path.basename(p) for p in res.column("path").to_pylist()] == ["a.mp4"]

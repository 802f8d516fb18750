"""Faults on the Ray engines of ``index texts``, ``index videos`` and ``index embeddings`` (images:
tests/test_ray_engine.py). Run 1: the first Ray worker to write Lance fragments (an embedding actor, or an embeddings
task) is SIGKILLed right after writing them and Ray retries its work; then the driver is SIGKILLed once its Nth
commit of the table has landed. Run 2 finishes: every sample exactly once (rows counted, keys checked distinct),
the rows of work the first run had finished intact (same ids and vectors), the killed worker's fragments on disk and
never committed. Ray runs locally in each driver process (two CPUs, loopback, no dashboard) and stops with it;
every process has a timeout. Slow (each driver starts Ray)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from clipdex.synthetic.embeddings import make_clip_retrieval_dir
from clipdex.synthetic.texts import captions
from clipdex.synthetic.videos import make_videos
from indexers.text_sources import discover_texts
from indexers.texts import TextIndexOptions, index_texts
from retrieval.index.directory import create_index, open_index
from retrieval.io.files import fs_path

ray = pytest.importorskip("ray", reason="the [ray] extra (in [dev])")
lance = pytest.importorskip("lance")
from tests.test_ray_engine import PYTHONPATH, RAY_DRIVER  # noqa: E402 - after the skips (it needs ray)

pytestmark = pytest.mark.slow
TINY = "clipdex-tiny"


def keyed(ix, table: str, key: tuple[str, ...]) -> dict:
    """The table's rows by ``key``, once it is checked that no key is stored twice: rows read, distinct keys and
    the store's count agree (a dict alone would hide a row committed twice)."""
    listed = pa.Table.from_batches(list(ix.store.scan(table))).to_pylist() if ix.store.count(table) else []
    by_key = {tuple(r[k] for k in key): r for r in listed}
    assert len(listed) == len(by_key) == ix.store.count(table), \
        f"{table}: {len(listed)} rows read, {len(by_key)} distinct keys, {ix.store.count(table)} counted"
    return by_key


def killed_run(tmp_path, args: list[str], table: str, at: int) -> None:
    """Run 1: a fragment-writing worker killed (Ray retries it), then the driver at its ``at``-th ``table`` commit."""
    kills = tmp_path / "kills"
    kills.mkdir()
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "KILL_AT": str(at), "KILL_TABLE": table,
           "CLIPDEX_RAY_KILL": str(kills)}
    env.pop("CLIPDEX_RAY_LOG", None)
    run = subprocess.run([sys.executable, "-c", RAY_DRIVER, *args], env=env, capture_output=True, timeout=300)
    assert run.returncode == -9, run.stderr[-2000:]
    assert "write" in os.listdir(kills)  # a worker died after writing fragments, before they were committed


def final_run(args: list[str]) -> dict:
    """Run 2, with no kill: its JSON summary."""
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    for k in ("CLIPDEX_RAY_LOG", "CLIPDEX_RAY_KILL", "KILL_AT", "KILL_TABLE"):
        env.pop(k, None)
    run = subprocess.run([sys.executable, "-c", RAY_DRIVER, *args, "--json"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def uncommitted_fragments(idx, table: str) -> set:
    """Data files of the Lance table on disk that no committed fragment references."""
    ds = lance.dataset(str(idx / "lance" / f"{table}.lance"))
    referenced = {f.path for frag in ds.get_fragments() for f in frag.data_files()}
    on_disk = set(os.listdir(idx / "lance" / f"{table}.lance" / "data"))
    assert referenced <= on_disk
    return on_disk - referenced


def intact(before: dict, after: dict, keep) -> int:
    """Rows committed before the kill that ``keep`` says were finished: the same id and vector after run 2."""
    n = 0
    for k, r in before.items():
        if keep(r):
            assert after[k]["id"] == r["id"], k
            np.testing.assert_array_equal(after[k]["vector"], r["vector"])
            n += 1
    return n


def test_texts_killed_actor_then_killed_driver_a_rerun_stores_every_text_once(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        with open(src / f"t{i}.jsonl", "w") as f:
            for t in captions(5, seed=i):
                f.write(json.dumps({"text": t, "n": i}) + "\n")
    (src / "bin.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")  # a file error, recorded once
    idx = tmp_path / "ix"
    args = ["index", "texts", str(src), "--index", str(idx), "--model", TINY, "--engine", "ray", "--batch-size", "4"]
    killed_run(tmp_path, args, "texts", 3)
    with open_index(idx) as ix:
        before = keyed(ix, "texts", ("source", "chunk"))
        partial = set(ix.manifest["tables"]["texts"]["partial"])
        assert 0 < len(before) < 30 and partial  # the third file committed, not finished
    s = final_run(args)
    with create_index(tmp_path / "local", model=TINY) as ix:
        index_texts(ix, discover_texts([str(src)]), TextIndexOptions(optimize=False))
        local = keyed(ix, "texts", ("source", "chunk"))
    with open_index(idx) as ix:
        after = keyed(ix, "texts", ("source", "chunk"))
        errs = keyed(ix, "errors", ("path",))
        assert ix.manifest["tables"]["texts"]["partial"] == []
    assert len(after) == 30 and after.keys() == local.keys() and list(errs) == [(str(src / "bin.txt"),)]
    assert {k: r["text"] for k, r in after.items()} == {k: r["text"] for k, r in local.items()}
    assert intact(before, after, lambda r: r["source"] not in partial) >= 10  # two files finished before the kill
    assert s["rows"] == 30 - intact(before, after, lambda r: r["source"] not in partial)
    assert uncommitted_fragments(idx, "texts")  # the killed actor's, and the interrupted file's first rows


def test_videos_killed_actor_then_killed_driver_a_rerun_stores_every_frame_once(tmp_path):
    src = tmp_path / "src"
    make_videos(src)
    idx = tmp_path / "ix"
    args = ["index", "videos", str(src), "--index", str(idx), "--model", TINY, "--engine", "ray", "--batch-size", "4",
            "--fps", "1"]
    killed_run(tmp_path, args, "frames", 2)
    with open_index(idx) as ix:
        before = keyed(ix, "frames", ("path", "frame_index"))
        done = {r["path"] for r in keyed(ix, "videos", ("path",)).values()}
        assert len(done) == 1 and {p for p, _ in before} - done  # the second video's frames landed, not its row
    s = final_run(args)
    with open_index(idx) as ix:
        after = keyed(ix, "frames", ("path", "frame_index"))
        videos = keyed(ix, "videos", ("path",))
        assert all(r["video_id"] in {v["id"] for v in videos.values()} for r in after.values())  # no orphan left
    assert len(videos) == 5 and s["added"] == 4
    per_video = {p: sum(1 for q, _ in after if q == p) for (p,) in videos}
    assert sum(per_video.values()) == len(after) and all(per_video.values())
    assert intact(before, after, lambda r: r["path"] in done) == per_video[next(iter(done))]
    assert uncommitted_fragments(idx, "frames")
    assert {fs_path(p) for (p,) in videos} == {str(p) for p in src.rglob("*") if p.is_file()}


def test_embeddings_killed_task_then_killed_driver_a_rerun_stores_every_row_once(tmp_path):
    """At most 4 files in flight (2 per CPU), so 12 files take at least 3 commits: the driver dies after the second,
    its files committed but not recorded; the first commit's files are recorded and stay as they are."""
    sizes = (30, 25, 20, 20, 15, 15, 12, 12, 10, 10, 10, 10)
    root = tmp_path / "emb"
    make_clip_retrieval_dir(root, dim=16, sizes=sizes)  # rows 5 and 7 of each part refused (zeros, NaN)
    idx = tmp_path / "ix"
    args = ["index", "embeddings", str(root), "--index", str(idx), "--engine", "ray"]
    killed_run(tmp_path, args, "images", 2)
    with open_index(idx) as ix:
        before = keyed(ix, "images", ("source_file", "source_row"))
        files = ix.manifest["tables"]["images"]["embedding_files"]
        n_rows = {str(root / "img_emb" / f"img_emb_{i}.npy"): n for i, n in enumerate(sizes)}
        recorded = {f for f, n in files.items() if n == n_rows[fs_path(f)]}
        assert recorded and {r["source_file"] for r in before.values()} - recorded  # committed, not recorded
    s = final_run(args)
    with open_index(idx) as ix:
        after = keyed(ix, "images", ("source_file", "source_row"))
        errs = keyed(ix, "errors", ("path",))  # each refused row once, the lost commit's ones included
    assert len(after) == sum(sizes) - 2 * len(sizes) and len(errs) == 2 * len(sizes)
    kept = intact(before, after, lambda r: r["source_file"] in recorded)
    assert kept == sum(n_rows[fs_path(f)] - 2 for f in recorded) and s["added"] == len(after) - kept
    assert uncommitted_fragments(idx, "images")

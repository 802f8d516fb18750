"""The Ray Data engine (``--engine ray``) in Ray local mode: the same rows as the local engine, exactly once after a
killed driver, bad shards recorded. Slow (Ray starts processes); two CPUs and a capped object store."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from clipdex.synthetic.shards import make_bad_shards, make_hostile_shards, make_shards
from indexers.images import ImageIndexOptions
from indexers.probe_rows import coding_available
from indexers.shards import index_shards
from retrieval.index.directory import Index, create_index, open_index
from retrieval.io.shards import discover_shards
from tests.helpers import CLI_MAIN, ROOT, kill_at_commit
from tests.ray_hooks import logged

ray = pytest.importorskip("ray", reason="the [ray] extra (in [dev])")
pytestmark = pytest.mark.slow
TINY = "clipdex-tiny"
OPTS = ImageIndexOptions(workers=0, batch_size=8, optimize=False)
RAY_INIT = dict(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)


HOOK = {"worker_process_setup_hook": "tests.ray_hooks.setup"}  # decode/embed logs, worker kills (tests/ray_hooks.py)
PYTHONPATH = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    log = tmp_path_factory.mktemp("ray_log")
    saved = {k: os.environ.get(k) for k in ("CLIPDEX_RAY_LOG", "PYTHONPATH")}
    os.environ.update(CLIPDEX_RAY_LOG=str(log), PYTHONPATH=PYTHONPATH)  # inherited by the workers
    ray.init(**RAY_INIT, runtime_env=HOOK)
    yield log
    ray.shutdown()
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def rows(ix, table="images") -> dict:
    """The table's rows by path, once it is checked that each path has one row: the rows read, the paths among
    them and the store's count agree (keyed by path alone, a sample committed twice would look like one)."""
    listed = pa.Table.from_batches(list(ix.store.scan(table))).to_pylist()
    by_path = {r["path"]: r for r in listed}
    assert len(listed) == len(by_path) == ix.store.count(table), \
        f"{table}: {len(listed)} rows read, {len(by_path)} distinct paths, {ix.store.count(table)} counted"
    return by_path


def test_rows_refuses_a_path_stored_twice(tmp_path):
    """The check can fail: a table holding one path twice is refused, though a dict by path would show 2 rows."""
    with create_index(tmp_path / "ix", dim=4, model="none") as ix:
        ix.add_vectors("images", np.eye(4, dtype=np.float32)[:3], {"path": ["a.jpg", "b.jpg", "a.jpg"]})
        with pytest.raises(AssertionError, match="3 rows read, 2 distinct paths"):
            rows(ix)


def test_ray_and_local_engines_give_the_same_rows_and_vectors(tmp_path, local_ray):
    from indexers.ray_engine import RayOptions, index_shards_ray

    make_shards(tmp_path / "shards", n_shards=3, per_shard=8, failed_per_shard=1)
    make_bad_shards(tmp_path / "shards")
    make_hostile_shards(tmp_path / "shards")  # duplicate keys, json keys no store takes, json too deep or too big
    found = discover_shards([str(tmp_path / "shards")])
    with create_index(tmp_path / "local", model=TINY) as ix:
        local_sum = index_shards(ix, found, OPTS).as_dict()
        local, local_err, local_done = rows(ix), rows(ix, "errors"), rows(ix, "shards")
        local_n = ix.store.count("images"), ix.store.count("errors")
    with create_index(tmp_path / "ray", model=TINY) as ix:
        ray_sum = index_shards_ray(ix, found, OPTS, RayOptions()).as_dict()
        remote, remote_err, remote_done = rows(ix), rows(ix, "errors"), rows(ix, "shards")
        remote_n = ix.store.count("images"), ix.store.count("errors")
    for k in ("added", "errors", "shards", "bad_shards", "metadata_dropped"):
        assert local_sum[k] == ray_sum[k], k
    # one row per key on both engines: 4 of the 6 samples of duplicates.tar, 2 of bad_keys.tar, 3 of deep_json.tar
    assert local_sum["added"] == 24 + 3 + 5 + 5 + 4 + 2 + 3 and local.keys() == remote.keys()
    assert local_n == remote_n == (len(local), len(local_err)) and local_sum["metadata_dropped"] == 1
    for path, a in local.items():
        b = remote[path]
        for col in ("shard", "key", "caption", "url", "width", "height", "hash", "bytes", "mtime", "sha256", "we_ird",
                    "EXIF_Make"):
            assert a[col] == b[col], (path, col)
        np.testing.assert_allclose(a["vector"], b["vector"], atol=1e-5)
        np.testing.assert_allclose(a["text_vector"], b["text_vector"], atol=1e-5)
    assert {p: (e["stage"], e["reason"]) for p, e in local_err.items()} == \
        {p: (e["stage"], e["reason"]) for p, e in remote_err.items()}
    assert {p: (d["samples"], d["errors"], d["broken"]) for p, d in local_done.items()} == \
        {p: (d["samples"], d["errors"], d["broken"]) for p, d in remote_done.items()}
    assert any(d["broken"] for d in remote_done.values())  # the truncated tar and the non-tar are recorded
    # each sample's probe codes for dedup, taken where it is decoded: the same on both engines
    local_codes, remote_codes = _codes_by_path(tmp_path / "local", local), _codes_by_path(tmp_path / "ray", remote)
    assert local_codes == remote_codes
    assert len(local_codes) == (len(local) if coding_available() else 0)


def _codes_by_path(folder, by_path: dict) -> dict:
    from retrieval.index.probe_codes import read_shards, shard_paths

    codes = read_shards(shard_paths(folder))
    path_of = {r["id"]: p for p, r in by_path.items()}
    return {path_of[i]: (codes.views[codes.view_owner == i].tolist(), codes.anchors[codes.anchor_owner == i].tolist())
            for i in codes.ids.tolist()}


def test_a_rerun_decodes_and_embeds_only_what_is_not_stored_and_the_driver_holds_no_rows(tmp_path, local_ray,
                                                                                          monkeypatch):
    from indexers import shards as shard_indexer
    from indexers.ray_engine import RayOptions, index_shards_ray

    make_shards(tmp_path / "shards", n_shards=3, per_shard=8, failed_per_shard=1)
    found = discover_shards([str(tmp_path / "shards")])
    with create_index(tmp_path / "ix", model=TINY) as ix:
        index_shards_ray(ix, found, OPTS, RayOptions())
        first = rows(ix)
        # what a killed run leaves: no shard recorded, half of the second shard's rows and none of the third's
        b, c = found.shards[1].path, found.shards[2].path
        lost = [r for r in first.values() if r["shard"] == c] + [r for r in first.values() if r["shard"] == b][:4]
        ix.delete("shards", [r["id"] for r in rows(ix, "shards").values()])
        ix.delete("images", [r["id"] for r in lost])
    for f in local_ray.iterdir():
        f.unlink()

    def every_stored_path(*args, **kwargs):
        raise AssertionError("the driver loaded every stored row's path")

    real_add = Index.add_rows

    def add_rows(self, table, batch):
        assert table != "images", "an images row went through the driver"
        return real_add(self, table, batch)

    monkeypatch.setattr(shard_indexer, "StoredImages", every_stored_path)
    monkeypatch.setattr(Index, "add_rows", add_rows)
    with open_index(tmp_path / "ix", writable=True) as ix:
        s = index_shards_ray(ix, found, OPTS, RayOptions())
        again = rows(ix)
        n_rows, n_shards = ix.store.count("images"), ix.store.count("shards")
    assert sorted(logged(local_ray, "decode")) == sorted(r["hash"] for r in lost)  # the stored ones never decoded
    assert sum(map(int, logged(local_ray, "embed"))) == len(lost) == 12
    assert (s.added, s.unchanged, s.known_errors, s.shards) == (12, 12, 3, 3)
    assert n_rows == len(again) == 24 and n_shards == 3 and again.keys() == first.keys()
    for path, r in again.items():
        np.testing.assert_allclose(r["vector"], first[path]["vector"], atol=1e-5)
        if r["shard"] == found.shards[0].path:
            assert r["id"] == first[path]["id"]  # stored rows kept, not rewritten


# The driver of a Ray run, killed once its Nth images commit has landed (an event: see tests/helpers.kill_at_commit).
RAY_DRIVER = kill_at_commit("""
import ray
ray.init(**%r, runtime_env=%r)
""" % (RAY_INIT, HOOK) + CLI_MAIN)


def test_killed_workers_then_a_killed_driver_a_rerun_commits_every_sample_once_and_search_reads_it(tmp_path):
    """Run 1: a decoding task's worker and an embedding actor's worker are SIGKILLed (the actor right after writing
    a fragment), Ray retries them, then the driver is SIGKILLed after its second commit; run 2 finishes."""
    make_shards(tmp_path / "shards", n_shards=3, per_shard=10, failed_per_shard=1)
    idx, kills = tmp_path / "ix", tmp_path / "kills"
    kills.mkdir()
    args = ["index", "images", str(tmp_path / "shards"), "--index", str(idx), "--model", TINY, "--engine", "ray",
            "--batch-size", "4", "--commit-every", "4"]
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "KILL_AT": "2", "CLIPDEX_RAY_KILL": str(kills)}
    env.pop("CLIPDEX_RAY_LOG", None)
    killed = subprocess.run([sys.executable, "-c", RAY_DRIVER, *args], env=env, capture_output=True, timeout=400)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert sorted(os.listdir(kills)) == ["decode", "write"]  # both workers died mid-run
    with open_index(idx) as ix:
        committed = rows(ix)
        assert 0 < len(committed) < 30 and ix.store.count("shards") < 3
    env = {**env, "KILL_AT": ""}
    env.pop("CLIPDEX_RAY_KILL")
    done = subprocess.run([sys.executable, "-c", RAY_DRIVER, *args, "--json"], env=env, capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    s = json.loads(done.stdout.strip().splitlines()[-1])
    with open_index(idx) as ix:  # every sample, error and shard exactly once: rows(...) checks each path has one row
        images, errs, done_shards = rows(ix), rows(ix, "errors"), rows(ix, "shards")
    assert len(images) == 30 and len(errs) == 3 and len(done_shards) == 3
    assert s["added"] + s["unchanged"] == 30 and s["unchanged"] == len(committed)
    for path, r in committed.items():  # the fragments committed before the kill, intact and not written again
        assert images[path]["id"] == r["id"] and images[path]["vector"] == r["vector"]
    lance = pytest.importorskip("lance")
    ds = lance.dataset(str(idx / "lance" / "images.lance"))
    referenced = {f.path for frag in ds.get_fragments() for f in frag.data_files()}
    on_disk = set(os.listdir(idx / "lance" / "images.lance" / "data"))
    assert referenced < on_disk  # the killed actor's fragment was written, and never committed
    opt = subprocess.run([sys.executable, "-m", "cli.main", "optimize", str(idx)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert opt.returncode == 0, opt.stderr[-2000:]
    found = subprocess.run([sys.executable, "-m", "cli.main", "search", str(idx), "a red circle", "-k", "3", "--json"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0 and found.stdout.count("\n") == 3 and "#" in found.stdout

"""``clipdex serve`` answers from what is committed: rows added or deleted by a writer while it runs, and an
index re-optimized, are served within a few polling intervals, on both backends, without a restart and without a
failed request while the new snapshot is swapped in."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from retrieval.index.directory import create_index, open_index
from tests.serve_helpers import client

D = 16
WAIT = 20.0  # seconds a change may take to show, far above the 0.1 s polling interval used here


def _vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _rows(c) -> int:
    return c.get("/api/indexes").json()["indexes"][0]["tables"]["images"]["rows"]


def _wait_for(predicate) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _top_path(c, v: np.ndarray) -> str:
    r = c.post("/api/search", json={"vector": v.tolist(), "k": 1})
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["path"]


@pytest.mark.parametrize("backend", ["lance", "faiss"])
def test_rows_added_and_deleted_while_serving_are_served_without_a_restart(tmp_path, backend):
    path = tmp_path / "live.clipdex"
    first, later = _vectors(40, 0), _vectors(10, 1)
    ix = create_index(path, dim=D, model="none", backend=backend)
    ix.add_vectors("images", first, {"path": [f"first{i}" for i in range(40)]})
    ix.close()
    with client(path, tmp_path / "cache", refresh_seconds=0.1) as c:
        assert _rows(c) == 40 and _top_path(c, later[3]).startswith("first")
        writer = open_index(path, writable=True)
        ids = writer.add_vectors("images", later, {"path": [f"later{i}" for i in range(10)]})
        writer.close()
        assert _wait_for(lambda: _rows(c) == 50), "added rows never served"
        assert _top_path(c, later[3]) == "later3"
        writer = open_index(path, writable=True)
        writer.delete("images", [int(ids[3])])
        writer.close()
        assert _wait_for(lambda: _rows(c) == 49), "a deleted row is still served"
        assert _top_path(c, later[3]) != "later3"


def test_searches_keep_answering_while_a_writer_commits_and_snapshots_are_swapped(tmp_path):
    path = tmp_path / "busy.clipdex"
    ix = create_index(path, dim=D, model="none", backend="lance")
    ix.add_vectors("images", _vectors(20, 2), {"path": [f"p{i}" for i in range(20)]})
    ix.close()
    failures, answered, stop = [], [0], threading.Event()
    q = _vectors(1, 3)[0].tolist()
    with client(path, tmp_path / "cache", refresh_seconds=0.05) as c:
        def searcher():
            while not stop.is_set():
                r = c.post("/api/search", json={"vector": q, "k": 5})
                if r.status_code != 200 or len(r.json()["results"]) != 5:
                    failures.append((r.status_code, r.text[:200]))
                answered[0] += 1

        t = threading.Thread(target=searcher)
        t.start()
        try:
            for batch in range(5):  # five commits, each a new snapshot to swap in under the searches
                writer = open_index(path, writable=True)
                writer.add_vectors("images", _vectors(4, 10 + batch), {"path": [f"w{batch}_{i}" for i in range(4)]})
                writer.close()
                assert _wait_for(lambda b=batch: _rows(c) == 20 + 4 * (b + 1))
        finally:
            stop.set()
            t.join(timeout=30)
    assert answered[0] > 0 and not failures, failures[:3]


def test_refresh_off_keeps_the_snapshot_opened_at_start(tmp_path):
    path = tmp_path / "still.clipdex"
    ix = create_index(path, dim=D, model="none", backend="faiss")
    ix.add_vectors("images", _vectors(5, 4), {"path": [f"s{i}" for i in range(5)]})
    ix.close()
    with client(path, tmp_path / "cache", refresh_seconds=0) as c:
        writer = open_index(path, writable=True)
        writer.add_vectors("images", _vectors(5, 5), {"path": [f"t{i}" for i in range(5)]})
        writer.close()
        time.sleep(0.5)
        assert _rows(c) == 5

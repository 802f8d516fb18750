"""Search settings set with ``persist=False`` (tuning, a dedup run's narrow probe) hold for the calling thread only:
a service answering other searches on the same open index keeps the table's own settings while a dedup runs."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from retrieval.ann.config import AnnConfig
from retrieval.index.directory import create_index
from retrieval.query.dedup_probe import dedup_probes

N, D, K = 2000, 16, 10


@pytest.fixture(params=["lance", "faiss"])
def ivf(request, tmp_path):
    """An IVF-Flat table searched with all its lists (exact), its queries and their exact top-k."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ix = create_index(tmp_path / "ix", dim=D, model="none", backend=request.param)
    ids = ix.add_vectors("images", x, {"path": [f"{i}.jpg" for i in range(N)]})
    ix.optimize("images", AnnConfig("ivf_flat", 0, {"recall": 0.9, "tune": False, "build": {"nlist": 16}}))
    ix.store.set_search_params("images", {"nprobe": 32})   # its factory has 32 lists: all
    xq = rng.standard_normal((50, D)).astype(np.float32)
    exact = ids[np.argsort(-(xq / np.linalg.norm(xq, axis=1, keepdims=True)) @ x.T, 1)[:, :K]]
    yield ix, xq, exact
    ix.close()


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact)])


def test_a_threads_own_setting_leaves_other_threads_searching_as_the_table_does(ivf):
    ix, xq, exact = ivf
    assert _recall(ix.search_vectors("images", xq, K)[1], exact) == 1.0
    lowered, go_on, seen = threading.Event(), threading.Event(), {}

    def narrow():
        ix.store.set_search_params("images", {"nprobe": 1}, persist=False)
        seen["narrow"] = _recall(ix.search_vectors("images", xq, K)[1], exact)
        lowered.set()
        go_on.wait(30)
        ix.store.set_search_params("images", None, persist=False)
        seen["after"] = _recall(ix.search_vectors("images", xq, K)[1], exact)

    t = threading.Thread(target=narrow)
    t.start()
    assert lowered.wait(30)
    assert seen["narrow"] < 0.8                                          # one list of 32: most neighbours missed
    assert _recall(ix.search_vectors("images", xq, K)[1], exact) == 1.0  # this thread: all the lists, as the table
    go_on.set()
    t.join(30)
    assert seen["after"] == 1.0                                          # dropped: the table's own again


def test_a_dedup_runs_narrow_probe_does_not_reach_other_threads(ivf):
    ix, xq, exact = ivf
    inside, done, seen = threading.Event(), threading.Event(), {}

    def dedup_thread():
        with dedup_probes(ix, "images"):
            seen["dedup"] = _recall(ix.search_vectors("images", xq, K)[1], exact)
            inside.set()
            done.wait(30)
        seen["after"] = _recall(ix.search_vectors("images", xq, K)[1], exact)

    t = threading.Thread(target=dedup_thread)
    t.start()
    assert inside.wait(30)
    assert seen["dedup"] < 1.0                                            # the dedup thread probes fewer lists
    assert _recall(ix.search_vectors("images", xq, K)[1], exact) == 1.0   # the service's searches: all the lists
    done.set()
    t.join(30)
    assert seen["after"] == 1.0

"""``DedupState.add_pairs``: merging a block's candidate pairs into the saved ones (known pairs keep their verdict,
new ones their best score, the result sorted and each pair once), checked against a plain dict reference; and the
search setting of a dedup run (``dedup_probes``)."""
from __future__ import annotations

import numpy as np

from retrieval.query.dedup_state import UNVERIFIED, DedupState


def test_known_pairs_keep_their_verdict_and_new_pairs_their_best_score():
    st = DedupState({})
    assert st.add_pairs(np.array([[1, 2], [3, 4]]), np.array([0.9, 0.8])) == 2
    st.kind[:] = (2, 0)
    st.evidence[0, 0] = 7.0
    added = st.add_pairs(np.array([[1, 2], [0, 5], [0, 5], [3, 4]]), np.array([0.99, 0.7, 0.75, 0.1]))
    assert added == 1
    assert st.pairs.tolist() == [[0, 5], [1, 2], [3, 4]]
    np.testing.assert_allclose(st.clip, [0.75, 0.9, 0.8])               # best of a new pair; known ones unchanged
    assert st.kind.tolist() == [UNVERIFIED, 2, 0] and st.evidence[1, 0] == 7.0 and np.isnan(st.evidence[0, 0])
    assert st.add_pairs(np.zeros((0, 2), np.int64), np.zeros(0)) == 0


def test_many_blocks_merge_like_a_dict_of_pairs():
    rng = np.random.default_rng(3)
    st, ref = DedupState({}), {}
    for block in range(20):
        a = rng.integers(0, 300, 200)
        b = a + rng.integers(1, 50, 200)
        s = rng.random(200).astype(np.float32)
        if block:
            st.kind[:] = 1                                        # verified between blocks: must survive
        known = set(ref)
        st.add_pairs(np.stack([a, b], 1), s)
        best: dict = {}
        for x, y, v in zip(a, b, s):
            best[(int(x), int(y))] = max(best.get((int(x), int(y)), -1.0), float(v))
        for k, v in best.items():
            ref.setdefault(k, v)                                  # the first block that found a pair decides
    keys = sorted(ref)
    assert [tuple(p) for p in st.pairs.tolist()] == keys
    np.testing.assert_allclose(st.clip, [ref[k] for k in keys], rtol=1e-6)
    assert st.kind.tolist() == [1 if k in known else UNVERIFIED for k in keys]


class _Store:
    """A store's search-settings surface only: what ``dedup_probes`` reads and sets."""

    def __init__(self, info):
        self.info, self.calls = info, []

    def has_table(self, name):
        return True

    def ann_info(self, name):
        return self.info

    def set_search_params(self, name, params, persist=True):
        assert persist is False          # never written to the index's manifest
        self.calls.append(None if params is None else dict(params))


def test_a_dedup_run_probes_few_lists_and_then_searches_with_the_tuned_setting():
    from types import SimpleNamespace

    from retrieval.query.dedup_probe import dedup_nprobe, dedup_probes

    assert dedup_nprobe(512, 256) == 8 and dedup_nprobe(1024, 256) == 16 and dedup_nprobe(2048, 256) == 32
    assert dedup_nprobe(8192, 256) == 32 and dedup_nprobe(65536, 256) == 32   # a row's search grows as sqrt(rows)
    assert dedup_nprobe(512, 4) == 4                                   # never more than tuned
    store = _Store({"kind": "ivf_pq_disk", "build": {"nlist": 512}, "params": {"nprobe": 256, "k_factor": 64}})
    with dedup_probes(SimpleNamespace(store=store), "images"):
        assert store.calls == [{"nprobe": 8, "k_factor": 2}]
    assert store.calls[-1] is None                  # the thread's setting dropped: the table's tuned one applies
    lance = _Store({"kind": "IVF_PQ", "build": {"num_partitions": 1024}, "params": {"nprobes": 40,
                                                                                    "refine_factor": 4}})
    with dedup_probes(SimpleNamespace(store=lance), "images"):
        assert lance.calls == [{"nprobes": 16, "refine_factor": 2}]
    flat = _Store({"kind": "flat", "params": {}})
    with dedup_probes(SimpleNamespace(store=flat), "images"):
        pass
    assert flat.calls == []

"""``DedupState.add_pairs``: merging a block's candidate pairs into the saved ones (known pairs keep their verdict,
new ones their best score, the result sorted and each pair once), checked against a plain dict reference."""
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

import numpy as np

from clipdex.synthetic.embeddings import unit_vectors
from retrieval.algorithms import rank_index, sus_lc_select, sus_lc_select_from_ranked


def naive_sus_lc(queries, index, per_class, dedup_ip):
    idx, lab = [], []
    for c, q in enumerate(queries):
        q = np.atleast_2d(q)
        scores = [max(float(x @ qq) for qq in q) for x in index]
        order = sorted(range(len(index)), key=lambda i: (-scores[i], i))
        kept = []
        for i in order:
            if len(kept) == per_class:
                break
            if any(float(index[i] @ index[j]) >= dedup_ip for j in kept):
                continue
            kept.append(i)
        idx += kept
        lab += [c] * len(kept)
    return np.array(idx, dtype=np.int64), np.array(lab, dtype=np.int64)


def corpus_with_duplicates(rng, n=60, dim=12):
    base = unit_vectors(rng, n, dim)
    dup = base[:20] + 0.02 * rng.standard_normal((20, dim)).astype(np.float32)  # near-duplicates of the first 20
    x = np.concatenate([base, dup / np.linalg.norm(dup, axis=1, keepdims=True)])
    return x[rng.permutation(len(x))]


def test_matches_explicit_implementation_with_dedup_and_multiple_queries():
    rng = np.random.default_rng(0)
    index = corpus_with_duplicates(rng)
    queries = [unit_vectors(rng, 2, 12), unit_vectors(rng, 1, 12), unit_vectors(rng, 12)]
    idx, lab = sus_lc_select(queries, index, per_class=7, dedup_ip=0.9)
    ridx, rlab = naive_sus_lc(queries, index, 7, 0.9)
    assert idx.dtype == np.int64 and lab.dtype == np.int64
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(lab, rlab)
    for c in range(3):  # within a class no kept pair is a near-duplicate
        e = index[idx[lab == c]]
        g = e @ e.T - 2 * np.eye(len(e))
        assert g.max() < 0.9


def test_dedup_keeps_the_better_ranked_of_a_near_duplicate_pair():
    q = np.array([[1.0, 0.0, 0.0]])
    index = np.array([[0.8, 0.6, 0.0], [0.9, 0.0, np.sqrt(1 - 0.81)], [0.79, 0.61, 0.0], [0.0, 1.0, 0.0]],
                     dtype=np.float32)
    index /= np.linalg.norm(index, axis=1, keepdims=True)
    idx, lab = sus_lc_select([q], index, per_class=3, dedup_ip=0.94)
    # ranking 1, 0, 2, 3; item 2 is a near-duplicate of the better-ranked 0
    np.testing.assert_array_equal(idx, [1, 0, 3])
    np.testing.assert_array_equal(lab, [0, 0, 0])


def test_dedup_is_per_class_so_two_classes_may_keep_the_same_image():
    index = np.eye(4, dtype=np.float32)
    idx, lab = sus_lc_select([index[:1], index[:1]], index, per_class=2, dedup_ip=0.94)
    np.testing.assert_array_equal(idx, [0, 1, 0, 1])
    np.testing.assert_array_equal(lab, [0, 0, 1, 1])


def test_labels_follow_class_names_when_class_order_is_permuted():
    rng = np.random.default_rng(1)
    index = corpus_with_duplicates(rng)
    names = ["cat", "dog", "owl", "eel"]
    q = {n: unit_vectors(rng, 2, 12) for n in names}
    idx, lab = sus_lc_select([q[n] for n in names], index, per_class=5)
    perm = ["owl", "cat", "eel", "dog"]
    pidx, plab = sus_lc_select([q[n] for n in perm], index, per_class=5)
    pairs = {(int(i), names[int(c)]) for i, c in zip(idx, lab)}
    ppairs = {(int(i), perm[int(c)]) for i, c in zip(pidx, plab)}
    assert pairs == ppairs and len(pairs) == 20


def test_ranked_path_agrees_with_dense_path():
    rng = np.random.default_rng(2)
    index = corpus_with_duplicates(rng, n=200, dim=16)
    queries = [unit_vectors(rng, 3, 16) for _ in range(5)]
    dense = sus_lc_select(queries, index, per_class=10, dedup_ip=0.94)
    ranked_ids = [rank_index(q, index, top=40) for q in queries]  # what a store's top-40 search returns
    ranked = sus_lc_select_from_ranked(ranked_ids, [index[i] for i in ranked_ids], per_class=10, dedup_ip=0.94)
    np.testing.assert_array_equal(dense[0], ranked[0])
    np.testing.assert_array_equal(dense[1], ranked[1])


def test_rank_index_top_is_a_prefix_of_the_full_ranking_with_ties_by_id():
    rng = np.random.default_rng(3)
    index = np.repeat(unit_vectors(rng, 10, 6), 3, axis=0)  # every score appears three times
    q = unit_vectors(rng, 2, 6)
    full = rank_index(q, index)
    np.testing.assert_array_equal(rank_index(q, index, top=7), full[:7])
    s = (index @ q.T).max(1)
    assert all((s[a] > s[b]) or (s[a] == s[b] and a < b) for a, b in zip(full[:-1], full[1:]))


def test_running_out_of_candidates_returns_fewer():
    index = np.eye(3, dtype=np.float32)
    idx, lab = sus_lc_select([index[:1]], index, per_class=10)
    assert len(idx) == 3 and set(lab) == {0}

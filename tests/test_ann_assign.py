"""The shortlist coarse assignment of large IVF builds (``retrieval.ann.assign``): its rule, its faiss form, the swap
around the adds, and that an index filled through it finds as much as one filled by the exact assignment."""
from __future__ import annotations

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from clipdex.synthetic.ann_realistic import make_realistic_corpus  # noqa: E402
from retrieval.ann import structures  # noqa: E402
from retrieval.ann.assign import (  # noqa: E402
    assign_shortlist,
    fast_assignment,
    shortlist_projection,
    shortlist_quantizer,
)

D = 512


@pytest.fixture(scope="module")
def corpus():
    """CLIP-like rows (the calibrated generator), centroids trained on them, text-like queries."""
    c = make_realistic_corpus(40_000, D, n_queries=8, seed=3, block_size=20_000)
    x = np.concatenate(list(c.blocks()))
    km = faiss.Kmeans(D, 256, niter=8, seed=1)
    km.train(x[:20_000])
    return x, km.centroids, c.text_queries(200, seed=2)


def exact_lists(x, centroids):
    return (x @ centroids.T).argmax(1)


def test_the_projection_has_orthonormal_rows_and_keeps_most_of_the_centroids_energy(corpus):
    _, cents, _ = corpus
    p = shortlist_projection(cents, D // 4)
    assert p.shape == (D // 4, D)
    np.testing.assert_allclose(p @ p.T, np.eye(D // 4), atol=1e-4)
    kept = np.linalg.norm(cents @ p.T) ** 2 / np.linalg.norm(cents) ** 2
    assert kept > 0.5  # the top quarter of the directions: the singular values fall
    rnd = np.linalg.qr(np.random.default_rng(0).standard_normal((D, D // 4)))[0].T
    assert kept > np.linalg.norm(cents @ rnd.T) ** 2 / np.linalg.norm(cents) ** 2 + 0.2


def test_the_rule_is_exact_with_every_centroid_shortlisted_and_mostly_exact_with_sixteen(corpus):
    x, cents, _ = corpus
    p = shortlist_projection(cents, D // 4)
    exact = exact_lists(x[:3000], cents)
    np.testing.assert_array_equal(assign_shortlist(x[:3000], cents, p, len(cents)), exact)
    got = assign_shortlist(x[:3000], cents, p, 16)
    assert (got == exact).mean() > 0.85
    # a miss lands in a centroid almost as close: the score lost is a small part of the row's own
    s = x[:3000] @ cents.T
    lost = s[np.arange(3000), exact] - s[np.arange(3000), got]
    assert lost.min() >= -1e-6 and np.quantile(lost, 0.99) < 0.05
    assert (assign_shortlist(x[:3000], cents, p, 1) == exact).mean() < (got == exact).mean()


def test_the_faiss_quantizer_searches_by_the_rule(corpus):
    x, cents, _ = corpus
    q = shortlist_quantizer(cents, D // 4, 16)
    _, got = q.search(np.ascontiguousarray(x[:3000]), 1)
    want = assign_shortlist(x[:3000], cents, shortlist_projection(cents, D // 4), 16)
    assert (got[:, 0] == want).mean() > 0.999  # float summation order may flip an exact tie


def lists_of(index):
    ivf = faiss.extract_index_ivf(index)
    out = np.full(index.ntotal, -1, np.int64)
    for lst in range(ivf.nlist):
        n = ivf.invlists.list_size(lst)
        if n:
            out[faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), n).copy()] = lst
    return out


def trained(factory, x, cents):
    index = structures.new_index(factory, D)
    ivf = faiss.extract_index_ivf(index)
    ivf.quantizer.add(np.ascontiguousarray(cents))
    ivf.quantizer.is_trained = True
    index.train(np.ascontiguousarray(x[:20_000]))
    return index


def test_rows_are_added_through_the_shortlist_and_the_exact_quantizer_comes_back(corpus, tmp_path):
    x, cents, _ = corpus
    index = trained("IVF256,PQ256x4fs", x, cents)
    with fast_assignment(index, min_lists=256) as used:
        assert used
        assert isinstance(faiss.downcast_index(faiss.extract_index_ivf(index).quantizer), faiss.IndexRefine)
        index.add_with_ids(np.ascontiguousarray(x[:5000]), np.arange(5000))
    assert type(faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)) in (faiss.IndexFlat,
                                                                                     faiss.IndexFlatIP)
    want = assign_shortlist(x[:5000], cents, shortlist_projection(cents, D // 4), 16)
    assert (lists_of(index) == want).mean() > 0.999
    assert (lists_of(index) != exact_lists(x[:5000], cents)).any()  # the shortlist, not the flat search, was used
    faiss.write_index(index, str(tmp_path / "i.faiss"))  # what is written holds the exact quantizer
    back = faiss.read_index(str(tmp_path / "i.faiss"))
    assert isinstance(faiss.downcast_index(faiss.extract_index_ivf(back).quantizer), faiss.IndexFlatIP)

    with pytest.raises(ValueError):  # restored on error too
        with fast_assignment(index, min_lists=256):
            raise ValueError("stop")
    assert not isinstance(faiss.downcast_index(faiss.extract_index_ivf(index).quantizer), faiss.IndexRefine)


def test_small_or_non_ivf_indexes_are_left_alone(corpus):
    x, cents, _ = corpus
    index = trained("IVF256,PQ256x4fs", x, cents)
    with fast_assignment(index) as used:  # 256 lists: under the default threshold
        assert not used
        index.add(np.ascontiguousarray(x[:2000]))
    np.testing.assert_array_equal(lists_of(index), exact_lists(x[:2000], cents))
    flat = faiss.IndexFlatIP(D)
    with fast_assignment(flat) as used:
        assert not used


def test_an_index_filled_through_the_shortlist_finds_as_much_as_the_exact_one(corpus):
    """Recall@10 after re-ranking 320 candidates, at a fixed nprobe, on text-like queries: within noise."""
    x, cents, xq = corpus
    gt = np.argsort(-(xq @ x.T), axis=1)[:, :10]
    recalls = []
    for fast in (False, True):
        index = trained("IVF256,PQ256x4fs", x, cents)
        idmap = faiss.IndexIDMap2(index)
        with fast_assignment(idmap, min_lists=256 if fast else 10**9):
            idmap.add_with_ids(np.ascontiguousarray(x), np.arange(len(x)))
        index.nprobe = 16
        _, cand = idmap.search(np.ascontiguousarray(xq), 320)
        s = np.take_along_axis(xq @ x.T, np.maximum(cand, 0), 1)
        top = np.take_along_axis(cand, np.argsort(-s, 1)[:, :10], 1)
        recalls.append(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, gt)]))
    assert recalls[0] > 0.6
    assert recalls[1] >= recalls[0] - 0.02


@pytest.mark.parametrize("backend,kind", [("lance", "ivf_pq_disk"), ("faiss", "ivf_pq_fs")])
def test_the_stores_full_size_builds_add_through_the_shortlist_and_keep_their_recall(tmp_path, monkeypatch,
                                                                                     backend, kind):
    """Both full-size build paths (the disk structure's ranks, the FAISS store's id map) fill through the shortlist
    once the list count reaches the threshold (lowered here), write the exact quantizer, and find as much."""
    from retrieval.ann import assign
    from retrieval.ann.exact import exact_search, recall_at_k
    from retrieval.index.directory import create_index
    from retrieval.index.optimize import OptimizeOptions, optimize_table

    c = make_realistic_corpus(30_000, 64, n_queries=8, seed=5, block_size=30_000)
    x = np.concatenate(list(c.blocks()))
    xq = c.text_queries(200, seed=1)
    _, gt = exact_search(xq, [(np.arange(len(x)), x)], 10)
    got, used = {}, []
    real = assign.fast_assignment

    def spy(index, min_lists=None):
        try:
            used.append(faiss.extract_index_ivf(index).nlist)
        except RuntimeError:  # not an IVF: left alone
            pass
        return real(index, min_lists)

    monkeypatch.setattr(structures, "fast_assignment", spy)
    for threshold in (10**9, 1):
        monkeypatch.setattr(assign, "FAST_ASSIGN_MIN_LISTS", threshold)
        ix = create_index(tmp_path / f"ix{threshold}", dim=64, model="none", backend=backend)
        ix.add_vectors("images", x)
        optimize_table(ix, "images", OptimizeOptions(kind=kind, exact_below=0, n_queries=200, queries=xq,
                                                     select=False))
        ix.store.set_search_params("images", {"nprobe": 48, "k_factor": 64}, persist=False)
        _, I = ix.search_vectors("images", xq, 10)
        got[threshold] = recall_at_k(I, gt, 10)
        ix.close()
    assert used and all(n >= 64 for n in used)
    assert got[10**9] > 0.8 and got[1] >= got[10**9] - 0.03, got
    quantizers = []
    for f in (tmp_path / "ix1").rglob("*.faiss"):
        back = faiss.read_index(str(f), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)  # held while its IVF is read
        try:
            ivf = faiss.extract_index_ivf(back)
        except RuntimeError:  # another table's flat index
            continue
        quantizers.append(type(faiss.downcast_index(ivf.quantizer)))
    assert quantizers and set(quantizers) == {faiss.IndexFlatIP}  # what was written is the exact quantizer


def test_the_assignment_cost_is_every_centroid_below_the_threshold_and_about_a_quarter_above_it():
    from retrieval.ann.assign import FAST_ASSIGN_MIN_LISTS, assignment_cost

    small = FAST_ASSIGN_MIN_LISTS // 2
    assert assignment_cost(1000, 512, small) == 2.0 * 1000 * small * 512
    big = 8192
    ratio = assignment_cost(1000, 512, big) / (2.0 * 1000 * big * 512)
    assert 0.2 < ratio < 0.35  # the projection and the re-rank on top of a quarter of the centroid scores

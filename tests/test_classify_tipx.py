import numpy as np

from clipdex.synthetic.embeddings import labelled_clusters, unit_vectors
from retrieval.algorithms import (
    DEFAULT_TIPX,
    kl_matrix,
    rescale_to_range,
    tip_adapter_logits,
    tipx_logits,
    tipx_search,
    tipx_signatures,
    zeroshot_logits,
)
from retrieval.algorithms.arrays import one_hot


def naive_kl(p, q):
    out = np.zeros((p.shape[0], q.shape[0]))
    for i in range(p.shape[0]):
        for j in range(q.shape[0]):
            out[i, j] = sum(p[i, c] * (np.log(p[i, c]) - np.log(q[j, c])) for c in range(p.shape[1]))
    return out


def test_signatures_are_softmax_of_cosines_over_temperature():
    rng = np.random.default_rng(0)
    f, w = unit_vectors(rng, 3, 6), unit_vectors(rng, 4, 6).T
    s = tipx_signatures(f, w, temperature=0.5)
    z = np.exp((f @ w) / 0.5)
    np.testing.assert_allclose(s, z / z.sum(1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(s.sum(1), 1, atol=1e-6)


def test_kl_matrix_matches_double_loop_for_n_not_a_multiple_of_100():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(5), size=103)  # the reference leaves the last 3 rows zero
    q = rng.dirichlet(np.ones(5), size=7)
    out = kl_matrix(p, q)
    assert out.shape == (103, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out, naive_kl(p, q), rtol=1e-4, atol=1e-6)
    assert np.all(np.abs(out[100:]) > 0)


def test_kl_of_a_distribution_with_itself_is_zero_and_zero_mass_is_ignored():
    p = np.array([[0.5, 0.5, 0.0]])
    q = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]])
    np.testing.assert_allclose(kl_matrix(p, q), [[0.0, np.log(2)]], atol=1e-6)


def test_rescale_to_range_hand_values():
    np.testing.assert_allclose(rescale_to_range(np.array([[0.0, 5.0], [10.0, 2.5]]), np.array([1.0, 3.0])),
                               [[1.0, 2.0], [3.0, 1.5]])
    np.testing.assert_allclose(rescale_to_range(np.full((2, 2), 7.0), np.array([0.2, 0.9])), 0.2)


def naive_tipx(f, s, l, w, alpha, beta, gamma, tau, ref=None):
    a = f @ s.T
    kl = naive_kl(tipx_signatures(f, w, tau).astype(np.float64), tipx_signatures(s, w, tau).astype(np.float64))
    r = a if ref is None else ref
    kl = (kl - kl.min()) / (kl.max() - kl.min()) * (r.max() - r.min()) + r.min()
    return 100 * f @ w + alpha * np.exp(-beta * (1 - a)) @ l - gamma * kl @ l


def test_tipx_logits_match_formula_with_and_without_ref_affinity():
    rng = np.random.default_rng(2)
    f, s, w = unit_vectors(rng, 4, 8), unit_vectors(rng, 6, 8), unit_vectors(rng, 3, 8).T
    l = one_hot(np.array([0, 0, 1, 1, 2, 2]), 3)
    out = tipx_logits(f, s, l, w, alpha=2.0, beta=3.0, gamma=1.5, temperature=0.5)
    np.testing.assert_allclose(out, naive_tipx(f, s, l, w, 2.0, 3.0, 1.5, 0.5), rtol=1e-4, atol=1e-3)
    ref = np.array([[0.1, 0.9]])
    out = tipx_logits(f, s, l, w, alpha=2.0, beta=3.0, gamma=1.5, ref_affinity=ref)
    np.testing.assert_allclose(out, naive_tipx(f, s, l, w, 2.0, 3.0, 1.5, 0.5, ref), rtol=1e-4, atol=1e-3)


def test_gamma_zero_is_tip_adapter_and_alpha_gamma_zero_is_zero_shot():
    rng = np.random.default_rng(3)
    f, s, w = unit_vectors(rng, 5, 8), unit_vectors(rng, 6, 8), unit_vectors(rng, 3, 8).T
    l = one_hot(np.array([0, 1, 2, 0, 1, 2]), 3)
    np.testing.assert_allclose(tipx_logits(f, s, l, w, alpha=1.3, beta=4.0, gamma=0.0),
                               tip_adapter_logits(f, s, l, w, alpha=1.3, beta=4.0), rtol=1e-6)
    np.testing.assert_allclose(tipx_logits(f, s, l, w, alpha=0.0, beta=4.0, gamma=0.0), zeroshot_logits(f, w))


def test_single_support_item_per_class():
    rng = np.random.default_rng(4)
    f, s, w = unit_vectors(rng, 3, 8), unit_vectors(rng, 3, 8), unit_vectors(rng, 3, 8).T
    l = np.eye(3, dtype=np.float32)
    out = tipx_logits(f, s, l, w, alpha=1.0, beta=2.0, gamma=0.5)
    np.testing.assert_allclose(out, naive_tipx(f, s, l, w, 1.0, 2.0, 0.5, 0.5), rtol=1e-4, atol=1e-3)


def test_default_parameters_give_the_formula_with_every_term_active():
    """Name-only use runs TIP-X with DEFAULT_TIPX: it is the paper's formula, and neither the cache nor the KL
    term is switched off (that would be zero-shot or Tip-Adapter)."""
    rng = np.random.default_rng(6)
    f, s, w = unit_vectors(rng, 5, 8), unit_vectors(rng, 6, 8), unit_vectors(rng, 3, 8).T
    l = one_hot(np.array([0, 0, 1, 1, 2, 2]), 3)
    out = tipx_logits(f, s, l, w, **DEFAULT_TIPX)
    alpha, beta, gamma = DEFAULT_TIPX["alpha"], DEFAULT_TIPX["beta"], DEFAULT_TIPX["gamma"]
    np.testing.assert_allclose(out, naive_tipx(f, s, l, w, alpha, beta, gamma, 0.5), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(tipx_logits(f, s, l, w), out)  # the function's own defaults are these
    assert not np.allclose(out, tip_adapter_logits(f, s, l, w, alpha=alpha, beta=beta), atol=1e-3)
    assert not np.allclose(out, zeroshot_logits(f, w), atol=1e-3)


def test_search_matches_explicit_loop_on_a_coarse_grid():
    rng = np.random.default_rng(5)
    centres, x, y = labelled_clusters(rng, num_classes=4, per_class=10, dim=16, noise=1.5)
    w = (centres + 1.2 * unit_vectors(rng, 4, 16)).T
    w /= np.linalg.norm(w, axis=0, keepdims=True)
    s, l = x[::2], one_hot(y[::2], 4)
    vf, vy = x[1::2], y[1::2]
    steps, scale = (4, 5, 3), (50, 50, 30)
    best = tipx_search(vf, vy, s, l, w, search_scale=scale, search_step=steps)
    ref = dict(acc=-1.0)
    for b in 1 + np.arange(5) * 49 / 5:
        for a in 0.1 + np.arange(4) * 49.9 / 4:
            for g in 0.1 + np.arange(3) * 29.9 / 3:
                acc = np.mean(tipx_logits(vf, s, l, w, a, b, g).argmax(1) == vy)
                if acc > ref["acc"]:
                    ref = dict(alpha=a, beta=b, gamma=g, acc=acc)
    assert best["acc"] == ref["acc"]
    assert np.isclose(best["alpha"], ref["alpha"]) and np.isclose(best["beta"], ref["beta"])
    assert np.isclose(best["gamma"], ref["gamma"])

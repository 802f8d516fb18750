import numpy as np
import pytest

from clipdex.synthetic.embeddings import labelled_clusters, unit_vectors
from retrieval.algorithms import gda_fit, gda_logits, gda_search_alpha, proker_logits, zeroshot_logits


def explicit_gda(x, y, c):
    n, d = x.shape
    mus = np.stack([x[y == k].mean(0) for k in range(c)])
    u = np.concatenate([x[y == k] - mus[k] for k in range(c)])
    ubar = u.mean(0)
    sigma = sum(np.outer(r - ubar, r - ubar) for r in u) / (n - 1)
    p = d * np.linalg.inv((n - 1) * sigma + np.trace(sigma) * np.eye(d))
    w = np.stack([p @ mus[k] for k in range(c)], axis=1)
    b = np.array([np.log(1 / c) - 0.5 * mus[k] @ p @ mus[k] for k in range(c)])
    return w, b


def test_gda_fit_matches_explicit_formula():
    rng = np.random.default_rng(0)
    _, x, y = labelled_clusters(rng, num_classes=3, per_class=6, dim=5, noise=0.8)
    shuffle = rng.permutation(len(y))  # rows need not be grouped by class
    w, b = gda_fit(x[shuffle], y[shuffle], 3)
    ew, eb = explicit_gda(x.astype(np.float64), y, 3)
    assert w.shape == (5, 3) and b.shape == (3,)
    np.testing.assert_allclose(w, ew, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b, eb, rtol=1e-4, atol=1e-4)


def test_gda_logits_formula_and_alpha_zero():
    rng = np.random.default_rng(1)
    f, wt = unit_vectors(rng, 4, 6), unit_vectors(rng, 3, 6).T
    w, b = rng.standard_normal((6, 3)), rng.standard_normal(3)
    np.testing.assert_allclose(gda_logits(f, wt, w, b, 0.5), 100 * f @ wt + 0.5 * (f @ w + b), rtol=1e-5)
    np.testing.assert_allclose(gda_logits(f, wt, w, b, 0.0), zeroshot_logits(f, wt))


def test_gda_fixes_a_bad_text_classifier_and_search_picks_the_best_alpha():
    rng = np.random.default_rng(2)
    centres, x, y = labelled_clusters(rng, num_classes=4, per_class=30, dim=16, noise=1.0)
    wt = (centres + 1.5 * unit_vectors(rng, 4, 16)).T
    wt /= np.linalg.norm(wt, axis=0, keepdims=True)
    w, b = gda_fit(x[::2], y[::2], 4)
    vf, vy = x[1::2], y[1::2]
    alpha, acc = gda_search_alpha(vf, vy, wt, w, b, alphas=(1e-4, 1e-2, 1.0, 100.0))
    accs = [np.mean(gda_logits(vf, wt, w, b, a).argmax(1) == vy) for a in (1e-4, 1e-2, 1.0, 100.0)]
    assert acc == max(accs) and alpha == (1e-4, 1e-2, 1.0, 100.0)[int(np.argmax(accs))]
    assert acc > np.mean(zeroshot_logits(vf, wt).argmax(1) == vy)


def test_gda_rejects_a_class_without_samples():
    with pytest.raises(ValueError, match="needs a sample"):
        gda_fit(np.eye(3), [0, 0, 2], 3)


def explicit_proker(s, y, wt, x, beta, lam):
    n, c = s.shape[0], wt.shape[1]
    k = np.array([[np.exp(-beta * (1 - s[i] @ s[j])) for j in range(n)] for i in range(n)])
    yy = np.eye(c)[y]
    alpha = np.linalg.inv(k / lam + np.eye(n)) @ (yy - s @ wt)
    kx = np.array([[np.exp(-beta * (1 - x[i] @ s[j])) for j in range(n)] for i in range(x.shape[0])])
    return x @ wt + kx @ alpha


def test_proker_matches_explicit_formula():
    rng = np.random.default_rng(3)
    s, wt = unit_vectors(rng, 6, 5).astype(np.float64), unit_vectors(rng, 3, 5).T.astype(np.float64)
    x = unit_vectors(rng, 4, 5)
    y = np.array([0, 1, 2, 0, 1, 2])
    out = proker_logits(s, y, wt, x, beta=1.7, lam=0.1)
    assert out.shape == (4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, explicit_proker(s, y, wt, x, 1.7, 0.1), rtol=1e-4, atol=1e-5)


def test_proker_edges_beta_to_zero_and_lambda_limits():
    rng = np.random.default_rng(4)
    s, wt, x = unit_vectors(rng, 6, 5), unit_vectors(rng, 3, 5).T, unit_vectors(rng, 4, 5)
    y = np.array([0, 1, 2, 0, 1, 2])
    # beta -> 0: kernel of ones, alpha = (11ᵀ/λ + I)⁻¹ R, every test row gets the same offset 1ᵀα
    r = np.eye(3)[y] - s @ wt
    offset = np.ones(6) @ (np.linalg.inv(np.ones((6, 6)) / 0.1 + np.eye(6)) @ r)
    np.testing.assert_allclose(proker_logits(s, y, wt, x, beta=0.0, lam=0.1), x @ wt + offset, rtol=1e-4, atol=1e-5)
    # λ -> 0: correction vanishes; λ -> ∞: alpha -> residual, logits -> f0 + k(x, S)(Y − f0(S))
    np.testing.assert_allclose(proker_logits(s, y, wt, x, beta=2.0, lam=1e-9), x @ wt, atol=1e-5)
    kx = np.exp(-2.0 * (1 - x @ s.T))
    np.testing.assert_allclose(proker_logits(s, y, wt, x, beta=2.0, lam=1e9), x @ wt + kx @ r, atol=1e-4)


def test_proker_interpolates_shot_labels_when_the_kernel_is_sharp():
    rng = np.random.default_rng(5)
    s, wt = unit_vectors(rng, 4, 8), unit_vectors(rng, 2, 8).T
    y = np.array([1, 0, 1, 0])
    out = proker_logits(s, y, wt, s, beta=200.0, lam=1e3)  # near-identity kernel, tiny regularisation
    np.testing.assert_allclose(out, np.eye(2)[y], atol=1e-2)

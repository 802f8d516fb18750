import numpy as np
import torch

from clipdex.synthetic.embeddings import labelled_clusters, unit_vectors
from retrieval.algorithms import build_cache, tip_adapter_logits, tip_adapter_search, zeroshot_logits
from retrieval.algorithms.arrays import one_hot


def naive_tip(f, keys, values, w, alpha, beta):
    out = np.zeros((f.shape[0], w.shape[1]))
    for i in range(f.shape[0]):
        for c in range(w.shape[1]):
            out[i, c] = 100 * sum(f[i, d] * w[d, c] for d in range(f.shape[1]))
            for m in range(keys.shape[0]):
                a = float(f[i] @ keys[m])
                out[i, c] += alpha * np.exp(-beta * (1 - a)) * values[m, c]
    return out


def test_tip_adapter_matches_explicit_loop():
    rng = np.random.default_rng(0)
    f, keys, w = unit_vectors(rng, 3, 6), unit_vectors(rng, 5, 6), unit_vectors(rng, 4, 6).T
    values = one_hot(np.array([0, 1, 2, 3, 1]), 4)
    out = tip_adapter_logits(f, keys, values, w, alpha=1.7, beta=3.0)
    assert out.shape == (3, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, naive_tip(f, keys, values, w, 1.7, 3.0), rtol=1e-5, atol=1e-4)


def test_hand_computed_single_item():
    # f = key exactly: A = 1, exp(0) = 1 -> cache adds alpha to the key's class
    f = np.array([[1.0, 0.0]])
    w = np.array([[1.0, 0.0], [0.0, 1.0]])
    out = tip_adapter_logits(f, f, np.array([[0.0, 1.0]]), w, alpha=2.0, beta=5.0)
    np.testing.assert_allclose(out, [[100.0, 2.0]], atol=1e-5)
    # orthogonal key: A = 0 -> alpha * exp(-beta)
    out = tip_adapter_logits(f, np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]]), w, alpha=2.0, beta=5.0)
    np.testing.assert_allclose(out, [[100.0, 2.0 * np.exp(-5.0)]], rtol=1e-5)


def test_alpha_zero_is_zero_shot_and_torch_inputs_work():
    rng = np.random.default_rng(1)
    f, keys, w = unit_vectors(rng, 7, 8), unit_vectors(rng, 4, 8), unit_vectors(rng, 3, 8).T
    values = one_hot(np.array([0, 1, 2, 2]), 3)
    out = tip_adapter_logits(torch.from_numpy(f), torch.from_numpy(keys), values, w, alpha=0.0, beta=9.0)
    np.testing.assert_allclose(out, zeroshot_logits(f, w), rtol=1e-6)


def test_build_cache_averages_raw_views_then_normalises():
    rng = np.random.default_rng(2)
    views = rng.standard_normal((3, 10, 5)).astype(np.float32) * 4
    keys, values = build_cache(views, [2, 0, 1], 3)
    m = views.mean(1)
    np.testing.assert_allclose(keys, m / np.linalg.norm(m, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(values, np.eye(3)[[2, 0, 1]])


def test_search_grid_matches_explicit_loop_and_improves_on_zero_shot():
    rng = np.random.default_rng(3)
    centres, x, y = labelled_clusters(rng, num_classes=5, per_class=8, dim=24, noise=1.2)
    # a deliberately poor text classifier: class centres rotated by noise
    w = (centres + 1.0 * unit_vectors(rng, 5, 24)).T
    w /= np.linalg.norm(w, axis=0, keepdims=True)
    keys, values = x[::2], one_hot(y[::2], 5)
    vf, vy = x[1::2], y[1::2]
    alpha, beta, acc = tip_adapter_search(vf, vy, keys, values, w, search_scale=(7, 3), search_step=(14, 6))
    best = (None, None, -1.0)
    for b in 0.1 + np.arange(14) * (7 - 0.1) / 14:
        for a in 0.1 + np.arange(6) * (3 - 0.1) / 6:
            acc_ = np.mean(tip_adapter_logits(vf, keys, values, w, a, b).argmax(1) == vy)
            if acc_ > best[2]:
                best = (a, b, acc_)
    assert (alpha, beta) == (float(best[0]), float(best[1]))
    assert acc == best[2]
    assert acc >= np.mean(zeroshot_logits(vf, w).argmax(1) == vy)

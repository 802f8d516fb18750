"""Row-block evaluation of TIP-X and X-MoRe equals the whole-matrix result when the global ranges/sums are passed."""
import numpy as np

from clipdex.synthetic.embeddings import labelled_clusters, unit_vectors
from retrieval.algorithms import (
    proker_fit,
    proker_logits,
    proker_predict,
    tipx_kl,
    tipx_log_signatures,
    tipx_logits,
    xmore_confidences,
    xmore_predict_batch,
    xmore_predict_stream,
)
from retrieval.algorithms.arrays import one_hot


def test_tipx_in_blocks_with_global_ranges_equals_whole_matrix():
    rng = np.random.default_rng(0)
    centres, support, labels = labelled_clusters(rng, num_classes=4, per_class=6, dim=16)
    test = unit_vectors(rng, 11, 16)
    W, L = centres.T.copy(), one_hot(labels, 4)
    whole = tipx_logits(test, support, L, W, alpha=3.0, beta=2.0, gamma=1.5)
    logq = tipx_log_signatures(support, W)
    kl = np.concatenate([tipx_kl(test[i:i + 4], support, W, support_logsig=logq) for i in range(0, 11, 4)])
    aff = test @ support.T
    blocks = [tipx_logits(test[i:i + 4], support, L, W, alpha=3.0, beta=2.0, gamma=1.5, kl_range=(kl.min(), kl.max()),
                          ref_affinity=np.array([aff.min(), aff.max()]), support_logsig=logq) for i in range(0, 11, 4)]
    np.testing.assert_allclose(np.concatenate(blocks), whole, rtol=1e-5, atol=1e-4)
    # without the global ranges a block is rescaled on its own and the result differs
    alone = tipx_logits(test[:4], support, L, W, alpha=3.0, beta=2.0, gamma=1.5)
    assert not np.allclose(alone, whole[:4], atol=1e-3)


def test_xmore_batch_totals_and_stream_prior_make_blocks_exact():
    rng = np.random.default_rng(1)
    zi = 10 * rng.standard_normal((9, 5)).astype(np.float32)
    zc = 10 * rng.standard_normal((9, 3, 5)).astype(np.float32)
    c_img, c_cap = xmore_confidences(zi, zc)
    totals = (c_img.sum(), c_cap.sum())
    parts = [xmore_predict_batch(zi[i:i + 4], zc[i:i + 4], totals=totals) for i in range(0, 9, 4)]
    np.testing.assert_allclose(np.concatenate(parts), xmore_predict_batch(zi, zc), rtol=1e-6)
    prior, parts = (0.0, 0.0), []
    for i in range(0, 9, 4):
        parts.append(xmore_predict_stream(zi[i:i + 4], zc[i:i + 4], prior=prior))
        prior = (prior[0] + c_img[i:i + 4].sum(), prior[1] + c_cap[i:i + 4].sum())
    np.testing.assert_allclose(np.concatenate(parts), xmore_predict_stream(zi, zc), rtol=1e-6)


def test_proker_fit_once_then_predict_in_blocks_equals_proker_logits():
    rng = np.random.default_rng(2)
    centres, shots, labels = labelled_clusters(rng, num_classes=3, per_class=4, dim=12)
    test = unit_vectors(rng, 7, 12)
    alpha = proker_fit(shots, labels, centres.T, beta=1.7, lam=0.1)
    assert alpha.shape == (12, 3)
    parts = [proker_predict(shots, centres.T, alpha, test[i:i + 3], beta=1.7) for i in range(0, 7, 3)]
    np.testing.assert_allclose(np.concatenate(parts), proker_logits(shots, labels, centres.T, test, 1.7, 0.1),
                               rtol=1e-6, atol=1e-6)

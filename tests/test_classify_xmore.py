import math

import numpy as np
import pytest

from clipdex.synthetic.embeddings import unit_vectors
from retrieval.algorithms import (
    dedup_rerank_captions,
    xmore_caption_logits,
    xmore_confidence,
    xmore_image_logits,
    xmore_predict_batch,
    xmore_predict_stream,
)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_confidence_is_one_for_one_hot_and_zero_for_uniform():
    assert xmore_confidence(np.array([[1000.0, 0.0, 0.0]])) == pytest.approx(1.0, abs=1e-6)
    assert xmore_confidence(np.zeros((4, 5))) == pytest.approx(0.0, abs=1e-9)
    # rows confident about different classes average to a uniform p̄
    assert xmore_confidence(np.array([[1000.0, 0.0], [0.0, 1000.0]])) == pytest.approx(0.0, abs=1e-9)


def test_confidence_hand_value_and_range():
    z = np.log(np.array([[0.5, 0.25, 0.25]]))
    h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert xmore_confidence(z) == pytest.approx(1 - h / math.log(3), rel=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = xmore_confidence(rng.standard_normal((3, 7)) * 10)
        assert 0.0 <= c <= 1.0


def naive_stream(zi, zc):
    out, si, sc = [], 0.0, 0.0
    for t in range(zi.shape[0]):
        ci, cc = xmore_confidence(zi[t : t + 1]), xmore_confidence(zc[t])
        si += ci
        sc += cc
        out.append(ci / si * softmax(zi[t]) + cc / sc * softmax(zc[t]).mean(0))
    return np.array(out)


def test_stream_matches_explicit_running_normalisation():
    rng = np.random.default_rng(1)
    zi, zc = rng.standard_normal((6, 4)) * 5, rng.standard_normal((6, 3, 4)) * 5
    np.testing.assert_allclose(xmore_predict_stream(zi, zc), naive_stream(zi, zc), rtol=1e-5)


def test_batch_is_order_independent_and_agrees_with_stream_on_the_last_row():
    rng = np.random.default_rng(2)
    zi, zc = rng.standard_normal((7, 5)) * 5, rng.standard_normal((7, 4, 5)) * 5
    batch, stream = xmore_predict_batch(zi, zc), xmore_predict_stream(zi, zc)
    np.testing.assert_allclose(batch[-1], stream[-1], rtol=1e-5)
    perm = rng.permutation(7)
    np.testing.assert_allclose(xmore_predict_batch(zi[perm], zc[perm]), batch[perm], rtol=1e-5)
    assert not np.allclose(xmore_predict_stream(zi[perm], zc[perm]), stream[perm])
    ci = np.array([xmore_confidence(zi[t : t + 1]) for t in range(7)])
    cc = np.array([xmore_confidence(zc[t]) for t in range(7)])
    expect = (ci / ci.sum())[:, None] * softmax(zi) + (cc / cc.sum())[:, None] * softmax(zc).mean(1)
    np.testing.assert_allclose(batch, expect, rtol=1e-5)


def test_first_stream_item_weights_each_modality_fully():
    zi, zc = np.array([[3.0, 0.0]]), np.array([[[0.0, 2.0], [1.0, 1.0]]])
    np.testing.assert_allclose(xmore_predict_stream(zi, zc)[0], softmax(zi[0]) + softmax(zc[0]).mean(0), rtol=1e-6)


def test_all_uniform_falls_back_to_average():
    out = xmore_predict_stream(np.zeros((2, 3)), np.zeros((2, 2, 3)))
    np.testing.assert_allclose(out, 1 / 3, rtol=1e-6)


def test_caption_and_image_logits():
    rng = np.random.default_rng(3)
    caps = rng.standard_normal((2, 3, 8)) * 2
    t = unit_vectors(rng, 4, 8)
    out = xmore_caption_logits(caps, t)
    assert out.shape == (2, 3, 4)
    for n in range(2):
        for k in range(3):
            e = caps[n, k] / np.linalg.norm(caps[n, k])
            np.testing.assert_allclose(out[n, k], 100 * t @ e, rtol=1e-5)
    f = unit_vectors(rng, 2, 8)
    np.testing.assert_allclose(xmore_image_logits(f, t), 100 * f @ t.T, rtol=1e-5)


def test_dedup_rerank_captions_drops_duplicates_and_resorts_by_image_score():
    f = np.array([1.0, 0.0, 0.0])
    e = np.array([[0.2, 1.0, 0.0], [0.9, 0.1, 0.0], [0.9, 0.1, 0.0001], [0.5, 0.5, 0.0], [0.95, 0.0, 0.3]])
    caps = ["A dog", "a cat", "a cat (near-dup embedding)", "a  dog", "a fox"]
    # "a  dog" duplicates "A dog" by text; row 2 duplicates row 1 by embedding
    out = dedup_rerank_captions(f, e, k=3, captions=caps, dedup_ip=0.99)
    scores = {i: (e[i] / np.linalg.norm(e[i]))[0] for i in (0, 1, 4)}
    assert list(out) == sorted(scores, key=lambda i: -scores[i])
    assert list(dedup_rerank_captions(f, e, k=2, captions=caps)) == list(out[:2])
    assert len(dedup_rerank_captions(f, e, k=16, dedup_ip=None)) == 5

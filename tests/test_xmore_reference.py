"""X-MoRe as its reference runs it (SeonghaEom/X-MoRe): both modalities scored at the model's own learned temperature,
``exp(logit_scale)`` (clip/custom_clip.py: 100 for OpenAI CLIP, 28.5 for clipdex-tiny), and the captions kept in the
retrieval's image -> image order (ensemble_with_entropy.py); the re-sort by image-caption score (create_cache.py, done
there with a larger model than the classifier) is an option."""
import math

import numpy as np
import pytest

from clipdex.synthetic.classify import CLASSES
from retrieval.algorithms import (
    dedup_rerank_captions,
    xmore_caption_logits,
    xmore_image_logits,
    xmore_predict_batch,
)
from retrieval.algorithms.arrays import l2_normalize
from retrieval.classify.pipeline import ClassificationRun, ClassifyOptions
from retrieval.classify.support import CAPTIONED, TABLE


def test_the_tiny_encoder_reports_its_learned_logit_scale(tiny):
    scale = float(tiny.model.logit_scale.detach())
    assert tiny.logit_scale == pytest.approx(math.exp(scale), rel=1e-6)
    assert 20 < tiny.logit_scale < 40  # clipdex-tiny's own temperature, not CLIP's clamp of 100


def test_logits_take_the_scale():
    rng = np.random.default_rng(0)
    f, t = l2_normalize(rng.standard_normal((3, 8))), l2_normalize(rng.standard_normal((4, 8)))
    caps = rng.standard_normal((3, 2, 8))
    np.testing.assert_allclose(xmore_image_logits(f, t, 28.5), 28.5 * f @ t.T, rtol=1e-5)
    np.testing.assert_allclose(xmore_caption_logits(caps, t, 28.5), 0.285 * xmore_caption_logits(caps, t), rtol=1e-5)


def test_at_the_models_temperature_a_caption_majority_overturns_a_narrow_image_margin():
    """Cosines as clipdex-tiny gives them: the image 0.03 closer to the wrong class 0, six of eight captions 0.1
    closer to the right class 1 (two to class 0). At the model's 28.5 the captions decide; at CLIP's 100 the image
    probabilities are near one-hot (0.95) and outvote a 6:2 caption majority."""
    img = np.array([[0.30, 0.27, 0.10]])  # f·t per class
    cap = np.array([[0.20, 0.30, 0.10]] * 6 + [[0.30, 0.20, 0.10]] * 2)[None]  # (1, K=8, C=3) caption·t

    def fused(scale):
        return xmore_predict_batch(scale * img, scale * cap)

    assert np.argmax(fused(28.5), 1)[0] == 1
    assert np.argmax(fused(100.0), 1)[0] == 0


def test_the_xmore_runner_scores_at_the_encoders_scale(tiny, classify_corpus):
    run = ClassificationRun(CLASSES, ClassifyOptions(methods=["xmore"], support=classify_corpus["support"],
                                                     templates="simple7"), tiny).prepare()
    try:
        x = run.runners[0]
        assert x.scale == pytest.approx(tiny.logit_scale) and x.params["logit_scale"] == round(tiny.logit_scale, 2)
        rng = np.random.default_rng(1)
        fb = l2_normalize(rng.standard_normal((2, run.W.shape[0]))).astype(np.float32)
        x.cap_ids = np.zeros((2, 1), np.int64)
        zi, _ = x._logits(fb, slice(0, 2))
        np.testing.assert_allclose(zi, tiny.logit_scale * fb @ run.W, rtol=1e-4)
    finally:
        run.close()


def test_captions_keep_the_retrieval_order_unless_reranked():
    f = np.array([1.0, 0.0, 0.0])
    e = np.array([[0.2, 1.0, 0.0], [0.9, 0.1, 0.0], [0.3, 0.9, 0.1], [0.95, 0.0, 0.3]])
    caps = ["a dog", "a cat", "A  Dog", "a fox"]  # row 2 repeats row 0's text
    assert list(dedup_rerank_captions(f, e, k=3, captions=caps, rerank=False)) == [0, 1, 3]
    assert list(dedup_rerank_captions(f, e, k=3, captions=caps)) == [1, 3, 0]  # by f·norm(e)


def test_the_xmore_runner_takes_the_first_distinct_captions_of_the_image_search(tiny, classify_corpus):
    kw = dict(methods=["xmore"], support=classify_corpus["support"], templates="simple7")
    run = ClassificationRun(CLASSES, ClassifyOptions(**kw), tiny).prepare()
    reranked = ClassificationRun(CLASSES, ClassifyOptions(**kw, xmore_rerank=True), tiny).prepare()
    try:
        x, xr = run.runners[0], reranked.runners[0]
        assert x.params["order"] == "retrieval" and xr.params["order"] == "image-caption score"
        rng = np.random.default_rng(2)
        feats = l2_normalize(rng.standard_normal((3, run.W.shape[0]))).astype(np.float32)
        x.fit(feats, 3)
        xr.fit(feats, 3)
        _, ids = run.ix.search_vectors(TABLE, feats, x.retrieve, where=CAPTIONED)
        rows = run.ix.store.take(TABLE, np.unique(ids[ids >= 0]), ["id", "caption"])
        text = dict(zip(rows.column("id").to_pylist(), rows.column("caption").to_pylist()))
        for b in range(3):
            seen, first = set(), []
            for i in ids[b][ids[b] >= 0]:
                key = " ".join((text[int(i)] or "").lower().split())
                if key not in seen:
                    seen.add(key)
                    first.append(int(i))
            got = [int(i) for i in x.cap_ids[b] if i >= 0]
            assert got == first[:len(got)] and len(got) == min(x.k, len(first))
        assert sorted(map(tuple, xr.cap_ids.tolist())) != sorted(map(tuple, x.cap_ids.tolist()))
    finally:
        run.close()
        reranked.close()

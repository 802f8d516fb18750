import numpy as np

from clipdex.synthetic.embeddings import make_ann_corpus, make_clip_like


def small(**kw):
    return make_clip_like(num_classes=6, dim=64, n_test=60, n_support=300, n_shots=2, seed=3, latent_dim=16, **kw)


def test_everything_is_unit_norm_float32_with_documented_shapes():
    d = small()
    for name in ("class_prompt_embs", "clip_weights", "class_query_embs", "test_feats", "val_feats", "shot_feats",
                 "support_image_embs", "support_caption_embs"):
        a = getattr(d, name)
        assert a.dtype == np.float32, name
        axis = 0 if name == "clip_weights" else -1
        np.testing.assert_allclose(np.linalg.norm(a, axis=axis), 1, atol=1e-5, err_msg=name)
    assert d.class_prompt_embs.shape == (6, 7, 64) and d.clip_weights.shape == (64, 6)
    assert d.shot_views.shape == (12, 10, 64) and d.shot_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert d.support_caption_embs.shape == d.support_image_embs.shape == (300, 64)


def test_seeded_and_deterministic():
    a, b = small(), small()
    np.testing.assert_array_equal(a.test_feats, b.test_feats)
    np.testing.assert_array_equal(a.support_caption_embs, b.support_caption_embs)
    c = make_clip_like(num_classes=6, dim=64, n_test=60, n_support=300, n_shots=2, seed=4, latent_dim=16)
    assert not np.allclose(a.test_feats, c.test_feats)


def test_cone_and_modality_gap_shape_the_cosines_like_clip():
    d = small()
    img, txt = d.support_image_embs, d.support_caption_embs
    assert (img @ img.T).mean() > 0.2  # shared cone: unrelated vectors still have positive cosine
    # image-image and text-text similarities exceed image-text ones (the modality gap)
    assert (img @ img.T).mean() > (img @ txt.T).mean() and (txt @ txt.T).mean() > (img @ txt.T).mean()
    # the gap is a consistent offset: mean image minus mean text is far from zero
    assert np.linalg.norm(img.mean(0) - txt.mean(0)) > 0.3


def test_support_corpus_bookkeeping():
    d = small(near_dup=0.1)
    dups = np.nonzero(d.support_dup_of >= 0)[0]
    assert len(dups) == 30
    src = d.support_dup_of[dups]
    assert np.all(src < dups)
    assert np.all(np.sum(d.support_image_embs[dups] * d.support_image_embs[src], 1) > 0.94)
    assert set(np.unique(d.support_labels)) <= set(range(-1, 6))
    named = d.support_caption_class >= 0
    assert 0 < named.mean() < 1


def test_ann_corpus_blocks_are_reproducible_and_sized():
    c = make_ann_corpus(1000, dim=32, n_queries=5, seed=1, block_size=300, n_clusters=8, latent_dim=8)
    first = list(c.blocks())
    assert [b.shape for b in first] == [(300, 32), (300, 32), (300, 32), (100, 32)]
    again = list(c.blocks())
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    x, cl = np.concatenate(first), np.concatenate(list(c.block_clusters()))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    # a query's best-scoring images come mostly from its own cluster (chance: 1/8), across the gap
    top = np.argsort(-(c.queries @ x.T), axis=1)[:, :20]
    assert np.mean(cl[top] == c.query_clusters[:, None]) > 0.5

"""The generated sample data is deterministic: the same seed gives the same bytes, another seed other data."""
from __future__ import annotations

import numpy as np

from clipdex.synthetic import make_shapes
from clipdex.synthetic.classify import CLASSES, make_classify_files
from clipdex.synthetic.embeddings import clustered, labelled_clusters, make_clip_like, unit_vectors
from clipdex.synthetic.texts import make_text_files
from clipdex.synthetic.videos import scene_frame
from tests.helpers import tree_digest


def test_drawn_shapes_are_the_same_for_a_seed_and_differ_across_seeds(tmp_path):
    a = make_shapes(tmp_path / "a", per_pair=1, size=32, seed=5)
    make_shapes(tmp_path / "b", per_pair=1, size=32, seed=5)
    make_shapes(tmp_path / "c", per_pair=1, size=32, seed=6)
    assert len(a) == 24 and tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


def test_classify_and_text_files_are_reproducible(tmp_path):
    for name in ("a", "b"):
        make_classify_files(tmp_path / name)
        make_text_files(tmp_path / name / "texts")
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert (tmp_path / "a" / "classes.txt").read_text().split() == CLASSES


def test_vector_generators_repeat_for_a_seed():
    assert np.array_equal(unit_vectors(3, 5, 8), unit_vectors(3, 5, 8))
    assert not np.array_equal(unit_vectors(3, 5, 8), unit_vectors(4, 5, 8))
    np.testing.assert_allclose(np.linalg.norm(unit_vectors(0, 7, 16), axis=1), 1, rtol=1e-6)
    assert np.array_equal(clustered(50, 8, seed=2), clustered(50, 8, seed=2))
    c1, x1, y1 = labelled_clusters(1, num_classes=3, per_class=4, dim=8)
    c2, x2, y2 = labelled_clusters(1, num_classes=3, per_class=4, dim=8)
    assert np.array_equal(x1, x2) and list(y1) == [0] * 4 + [1] * 4 + [2] * 4
    d1, d2 = (make_clip_like(num_classes=4, dim=32, n_test=8, n_support=16, n_shots=1, seed=9) for _ in range(2))
    assert np.array_equal(d1.test_feats, d2.test_feats) and np.array_equal(d1.support_caption_embs,
                                                                           d2.support_caption_embs)


def test_a_video_frame_is_known_without_decoding():
    assert np.array_equal(scene_frame(3, 1.5), scene_frame(3, 1.5))
    assert scene_frame(3, 1.5, (40, 30)).shape == (30, 40, 3)
    assert not np.array_equal(scene_frame(3, 0.5), scene_frame(3, 1.5))  # a new scene each second

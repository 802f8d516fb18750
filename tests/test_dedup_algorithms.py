"""The pure functions of near-duplicate finding: candidate pairs, groups, kinds, the keeper, the image second signal
and video alignment."""
from __future__ import annotations

import random

import numpy as np
import pytest

from retrieval.algorithms.dedup import (
    ImageThresholds,
    candidate_pairs,
    choose_keep,
    clique_groups,
    components,
    jaccard,
    pair_kind,
    shingles,
    text_kind,
)
from retrieval.algorithms.dedup_video import align_videos, video_kind

pytest.importorskip("imagehash")


def test_candidate_pairs_drop_self_padding_and_low_scores_and_keep_each_pair_once_at_its_best():
    ids = np.array([5, 7, 9])
    D = np.array([[1.0, 0.9, 0.4], [1.0, 0.95, -np.inf], [1.0, 0.8, 0.7]], np.float32)
    I = np.array([[5, 7, 9], [7, 5, -1], [9, 5, 7]])
    pairs, scores = candidate_pairs(ids, D, I, min_score=0.75)
    assert pairs.tolist() == [[5, 7], [5, 9]]
    np.testing.assert_allclose(scores, [0.95, 0.8])


def test_components_chain_pairs_but_the_clique_rule_needs_every_pair():
    pairs = np.array([[1, 2], [2, 3], [10, 11]])
    assert [g.tolist() for g in components(pairs)] == [[1, 2, 3], [10, 11]]
    cliques = clique_groups(pairs, np.array([0.9, 0.8, 0.7], np.float32))
    assert [g.tolist() for g in cliques] == [[1, 2], [10, 11]]
    closed = clique_groups(np.array([[1, 2], [2, 3], [1, 3]]), np.ones(3, np.float32))
    assert [g.tolist() for g in closed] == [[1, 2, 3]]


def test_pair_kind_needs_the_second_signal_whatever_the_clip_score():
    t = ImageThresholds(near_bits=10, similar_bits=16, similar_clip=0.9)
    assert pair_kind(0.2, 30, True, t) == "exact"
    assert pair_kind(0.3, 10, False, t) == "near"
    assert pair_kind(0.95, 14, False, t) == "similar"
    assert pair_kind(0.85, 14, False, t) == ""      # alike hashes but not close enough vectors
    assert pair_kind(0.999, 17, False, t) == ""     # a CLIP score alone never makes a duplicate


def test_choose_keep_follows_the_policy_and_breaks_ties_by_smallest_id():
    sizes, mtimes, ids = np.array([10, 30, 30]), np.array([5.0, 1.0, 9.0]), np.array([4, 8, 2])
    assert choose_keep(sizes, mtimes, ids, "largest") == 2
    assert choose_keep(sizes, mtimes, ids, "newest") == 2
    assert choose_keep(sizes, mtimes, ids, "first") == 2
    assert choose_keep(sizes, np.array([9.0, 1.0, 5.0]), ids, "newest") == 0
    with pytest.raises(ValueError):
        choose_keep(sizes, mtimes, ids, "biggest")


def test_text_kinds_from_word_overlap():
    a = shingles("The quick brown fox jumps over the lazy dog near the river bank")
    b = shingles("the quick brown fox jumps over the lazy dog near the river bank!")
    c = shingles("A slow green turtle walks under the busy bridge")
    assert jaccard(a, b) == 1.0 and text_kind(False, jaccard(a, b), 0.9) == "near"
    assert text_kind(False, jaccard(a, c), 0.99) == ""
    assert text_kind(True, 0.0, 0.0) == "exact"


def _scene_images():
    from clipdex.synthetic.dedup import TRANSFORMS, same_objects_scene, same_shape_drawing
    from clipdex.synthetic.world import render_scene, sample_scene

    rng = random.Random(3)
    scene = sample_scene(rng, n_objects=2, background="stripes")
    img = render_scene(scene, 128, seed=1)
    copies = {name: fn(img, 2, rng) for name, fn in TRANSFORMS.items()}
    others = [render_scene(same_shape_drawing(scene, rng), 128, seed=2),
              render_scene(same_objects_scene(scene, rng), 128, seed=3)]
    return img, copies, others


def test_aligned_hashes_find_every_transformed_copy_and_no_other_drawing_of_the_same_shapes():
    from retrieval.algorithms.dedup_image import aligned_distance, hash_bank

    img, copies, others = _scene_images()
    a = hash_bank(img)
    near = ImageThresholds().near_bits
    for name, copy in copies.items():
        assert aligned_distance(*a, *hash_bank(copy)) <= near, name
    for other in others:
        assert aligned_distance(*a, *hash_bank(other)) > ImageThresholds().similar_bits


def test_trim_boxes_find_the_picture_inside_a_screenshot_frame():
    from PIL import Image

    from retrieval.algorithms.dedup_image import trim_boxes

    rng = np.random.default_rng(0)
    inner = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    shot = Image.new("RGB", (70, 70), (236, 236, 236))
    shot.paste(Image.new("RGB", (70, 8), (70, 110, 180)), (0, 0))
    shot.paste(Image.fromarray(inner), (10, 18))
    assert (10, 18, 60, 58) in trim_boxes(np.asarray(shot))


def test_a_clip_is_contained_with_its_time_range_and_a_shared_opening_is_not_a_duplicate():
    t_long, t_clip = np.arange(12.0), np.arange(5.0)
    al = align_videos(t_clip, t_long, np.arange(5), np.arange(4, 9))
    assert video_kind(al) == "contained" and al.offset == 4.0 and al.range_b == (4.0, 8.0)
    t_other = np.arange(12.0)
    opening = align_videos(t_long, t_other, np.arange(3), np.arange(3))
    assert opening.cover_a == 0.25 and video_kind(opening) == ""
    copy = align_videos(t_long, t_other, np.arange(12), np.arange(12))
    assert video_kind(copy) == "near" and video_kind(copy, same_bytes=True) == "exact"
    # frames that look alike at scattered times do not line up: no duplicate
    scattered = align_videos(t_long, t_other, np.array([0, 3, 6, 9]), np.array([11, 1, 7, 2]))
    assert video_kind(scattered) == ""

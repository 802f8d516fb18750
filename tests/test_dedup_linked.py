"""Near-duplicate quality (issue 24): a copy's frame lies inside the other's or is turned about its centre
(``pixels_agree`` with ``frame_pose``), another shot's does not; similar needs close frames (``pixels_alike``);
groups merge by average linkage over the pairs that decided something (``linked_groups``)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from retrieval.algorithms.dedup import ImageThresholds, linked_groups, pair_kind, pixels_agree, pixels_alike


def test_pixels_agree_needs_one_frame_inside_the_other_or_turned_about_its_centre():
    t = ImageThresholds()
    # (ncc, worst tile, overlap, offset, turn)
    assert pixels_agree((0.99, 0.01, 1.0, 0.08, 0.0), t)        # a crop: inside the other frame, off centre
    assert pixels_agree((0.99, 0.01, 0.95, 0.003, 6.0), t)      # turned about its centre: corners stick out
    assert not pixels_agree((0.99, 0.01, 0.985, 0.03, 0.2), t)  # another shot: the frame sticks out, off centre
    assert not pixels_agree((0.99, 0.01, 0.95, 0.003, 0.1), t)  # sticks out without a turn
    assert pixels_agree((0.99, 0.01, 0.985), t)                 # pose not measured (older evidence): not checked
    assert pixels_agree((0.99, 0.01, 1.0, 0.08, 0.0, 0.9), t)   # most textured tiles agree on their own
    assert not pixels_agree((0.99, 0.01, 1.0, 0.08, 0.0, 0.5), t)  # the frame agrees, what is inside it does not
    assert not pixels_agree((0.99, 0.01, 1.0, 0.05, -106.0, 1.0), t)  # one shape fitted onto another drawing of it
    assert not pixels_agree((0.99, 0.01, 1.0, 0.02, 1.3, 1.0), t)  # inside, but fitted with a turn off the centre


def test_similar_needs_frames_close_together_a_same_objects_layout_is_not():
    t = ImageThresholds()
    assert pixels_alike((0.97, 0.3, 0.98, 0.03, 0.5), t)       # another shot: objects moved a little
    assert not pixels_alike((0.98, 0.1, 0.93, 0.16, 0.0), t)   # the same objects laid out elsewhere
    assert not pixels_alike((0.6, 3.0, 0.98, 0.03, 0.0), t)    # pixels unrelated
    assert not pixels_alike((0.99, 0.01, 0.95, 0.05, 11.0), t)  # one shape on two plain grounds, fitted turned
    assert pair_kind(0.95, 14, False, t, (0.98, 0.1, 0.93, 0.16, 0.0)) == ""
    assert pair_kind(0.95, 14, False, t, (0.97, 0.3, 0.98, 0.03, 0.5)) == "similar"
    assert pair_kind(0.95, 8, False, t, (0.99, 0.1, 0.985, 0.03, 0.2)) == "similar"


def test_linked_groups_keep_out_a_member_linked_to_a_few_of_a_group_and_refused_by_the_rest():
    # 0..4: a picture and its copies (all verified with each other except 3-4: two crops that do not align);
    # 9: another shot, verified with the two crops only, aligned and refused by 0, 1, 2
    copies = [(a, b) for a in range(5) for b in range(a + 1, 5) if (a, b) != (3, 4)]
    pairs = np.array(copies + [(3, 9), (4, 9)], np.int64)
    checked = np.concatenate([pairs, [(0, 9), (1, 9), (2, 9)]])
    assert [g.tolist() for g in linked_groups(pairs, checked)] == [[0, 1, 2, 3, 4]]
    # without the refusals the shot's two edges are all that was checked: it joins (as components would)
    assert [g.tolist() for g in linked_groups(pairs, pairs)] == [[0, 1, 2, 3, 4, 9]]
    # two shots of one scene, each refused by the group, still pair with each other
    pairs2 = np.concatenate([pairs, [(9, 10), (3, 10)]])
    checked2 = np.concatenate([checked, pairs2, [(0, 10), (1, 10), (2, 10)]])
    assert [g.tolist() for g in linked_groups(pairs2, checked2)] == [[0, 1, 2, 3, 4], [9, 10]]


def test_linked_groups_peel_the_weakest_first_and_regroup_those_peeled():
    pairs = np.array([(0, 1), (2, 3), (0, 2), (1, 3)], np.int64)
    checked = np.concatenate([pairs, [(0, 3)]])   # 0 and 3: 2 edges of 3 checked pairs; 1 and 2: 2 of 2
    assert [g.tolist() for g in linked_groups(pairs, checked)] == [[0, 1, 2, 3]]
    checked = np.concatenate([pairs, [(0, 3), (1, 2)]])  # everyone 2 of 3: 3 leaves, then 2 (1 of 2, as 1)
    assert [g.tolist() for g in linked_groups(pairs, checked, min_share=0.7)] == [[0, 1], [2, 3]]
    assert linked_groups(np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64)) == []


def test_frame_pose_gives_the_centre_offset_and_the_turn():
    from retrieval.algorithms.dedup_pixels import frame_pose

    shift = np.array([[1, 0, 4], [0, 1, 0], [0, 0, 1.0]])
    assert frame_pose(shift, (100, 100), (100, 100)) == pytest.approx((0.04, 0.0))
    th = np.radians(8)
    c, s = np.cos(th), np.sin(th)
    turn = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    centre = np.array([[1, 0, 50], [0, 1, 50], [0, 0, 1.0]])
    about_centre = centre @ turn @ np.linalg.inv(centre)
    offset, angle = frame_pose(about_centre, (100, 100), (100, 100))
    assert offset == pytest.approx(0.0, abs=1e-9) and angle == pytest.approx(8.0)


def _one_object(dx: float):
    from clipdex.synthetic.world import render_scene, sample_scene

    scene = sample_scene(random.Random(11), n_objects=1, background="plain")
    scene["objects"][0]["cx"] += dx
    return render_scene(scene, 128, seed=1)


def test_one_object_moved_on_a_plain_ground_is_not_near_but_its_copies_are():
    """The old pixel check let this shot through (ncc 0.99, no tile differing): only its frame tells."""
    pytest.importorskip("imagehash")
    pytest.importorskip("cv2")
    from clipdex.synthetic.dedup import TRANSFORMS
    from retrieval.algorithms.dedup_verdict import image_evidence

    def evidence(img):
        from retrieval.algorithms.dedup_image import hash_bank_geometry

        views, bank, view_geo, bank_geo, pic = hash_bank_geometry(img)
        return np.asarray(pic), views, bank, view_geo, bank_geo

    t = ImageThresholds()
    original, shot = evidence(_one_object(0.0)), evidence(_one_object(0.035))
    bits, pixels = image_evidence(original, shot, t)
    assert pair_kind(0.97, bits, False, t, pixels) != "near", (bits, pixels)
    rng = random.Random(2)
    for name in ("jpeg", "crop", "rotate", "screenshot"):
        copy = evidence(TRANSFORMS[name](_one_object(0.0), 2, rng))
        bits, pixels = image_evidence(original, copy, t)
        assert pair_kind(0.97, bits, False, t, pixels) == "near", (name, bits, pixels)


def test_only_refusals_made_the_way_another_shot_is_count_against_a_group():
    from retrieval.algorithms.dedup_verdict import refused_like_a_shot

    nan = np.nan
    kind = np.array([0, 0, 0, 0, 2, 0], np.int8)
    # bits, same, ncc, worst tile, overlap, offset, turn, share of textured tiles that agree
    evidence = np.array([[8, 0, 0.99, 0.01, 0.98, 0.03, 0.1, 0.95],  # pixels agree, frames close: another shot
                         [8, 0, 0.99, 0.01, 0.96, 0.15, 0.0, 0.95],  # two crops far apart: explains nothing
                         [18, 0, nan, nan, nan, nan, nan, nan],       # never aligned
                         [8, 0, 0.55, 2.6, 0.93, 0.05, -8.0, 0.1],   # alignment failed
                         [0, 0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0],       # a duplicate, not a refusal
                         [8, 0, 0.99, 0.01, 1.0, 0.0, 0.0, 0.6]])    # pixels differ in some tiles (a heavy watermark)
    assert refused_like_a_shot(kind, evidence, ImageThresholds()).tolist() == [True, False, False, False, False,
                                                                                 False]

"""Video scoring math (docs/ALGORITHMS.md section 5): hand-computed cases, limits, masks, blocks, segments, sampling."""

import numpy as np
import pytest

from retrieval.algorithms.video import (
    Segment,
    best_frame,
    clip_rerank,
    frame_segments,
    maxpool_sim,
    mean_pool_vectors,
    mean_pooling_sim,
    pad_frames,
    query_scoring_sim,
    sample_times_chunks,
    sample_times_fps,
)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def ragged():
    """Seeded ragged videos: 7 videos with 1..9 frames, 4 queries, D = 16."""
    rng = np.random.default_rng(0)
    lens = [3, 1, 9, 5, 2, 7, 4]
    videos = [_unit(rng.normal(size=(n, 16))).astype(np.float32) for n in lens]
    text = _unit(rng.normal(size=(4, 16))).astype(np.float32)
    return text, videos


# ---- hand-computed examples --------------------------------------------------------------------------------------
def test_maxpool_and_mean_pooling_on_a_hand_made_video():
    text = np.array([[1.0, 0.0]], dtype=np.float32)
    frames = np.array([[[1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)  # one video: e1 then e2
    assert maxpool_sim(text, frames) == pytest.approx(np.array([[1.0]]))
    # mean of raw frames = (0.5, 0.5) -> normalised (1/sqrt2, 1/sqrt2) -> cos = 1/sqrt2
    assert mean_pooling_sim(text, frames)[0, 0] == pytest.approx(1 / np.sqrt(2), abs=1e-6)


def test_query_scoring_on_a_hand_made_video():
    text = np.array([[1.0, 0.0]], dtype=np.float32)
    frames = np.array([[[1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)
    tau = 0.5
    w1, w2 = np.exp(1 / tau), np.exp(0 / tau)
    w1, w2 = w1 / (w1 + w2), w2 / (w1 + w2)
    expected = w1 / np.hypot(w1, w2)  # u = (w1, w2); cos(t, u)
    assert query_scoring_sim(text, frames, tau=tau)[0, 0] == pytest.approx(expected, abs=1e-6)


def test_query_scoring_weights_the_raw_frame_vectors():
    # frame lengths differ: cos uses normalised frames for the weights but sums the raw vectors
    text = np.array([[1.0, 0.0]], dtype=np.float32)
    frames = np.array([[[2.0, 0.0], [0.0, 1.0]]], dtype=np.float32)
    tau = 1.0
    w = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()
    u = w[0] * np.array([2.0, 0.0]) + w[1] * np.array([0.0, 1.0])
    assert query_scoring_sim(text, frames, tau=tau)[0, 0] == pytest.approx(u[0] / np.linalg.norm(u), abs=1e-6)


def test_text_is_normalised_so_scores_are_cosines():
    text = np.array([[3.0, 4.0]], dtype=np.float32)
    frames = np.array([[[3.0, 4.0]]], dtype=np.float32) * 7
    for fn in (maxpool_sim, mean_pooling_sim, query_scoring_sim):
        assert fn(text, frames)[0, 0] == pytest.approx(1.0, abs=1e-6)


# ---- limits of query scoring ------------------------------------------------------------------------------------
def test_query_scoring_tends_to_max_pooling_as_tau_goes_to_zero(ragged):
    text, videos = ragged
    frames, mask = pad_frames(videos)
    np.testing.assert_allclose(
        query_scoring_sim(text, frames, tau=1e-5, frame_mask=mask), maxpool_sim(text, frames, mask), atol=1e-5
    )


def test_query_scoring_tends_to_mean_pooling_as_tau_grows(ragged):
    text, videos = ragged
    frames, mask = pad_frames(videos)
    mean = mean_pooling_sim(text, frames, mask)
    np.testing.assert_allclose(query_scoring_sim(text, frames, tau=1e6, frame_mask=mask), mean, atol=1e-5)
    np.testing.assert_allclose(query_scoring_sim(text, frames, tau=np.inf, frame_mask=mask), mean, atol=1e-6)


def test_all_poolings_agree_on_a_video_of_identical_frames():
    rng = np.random.default_rng(1)
    text = _unit(rng.normal(size=(3, 8))).astype(np.float32)
    frame = _unit(rng.normal(size=(4, 1, 8))).astype(np.float32)
    frames = np.repeat(frame, 5, axis=1)
    expected = text @ frame[:, 0].T
    for s in (maxpool_sim(text, frames), mean_pooling_sim(text, frames), query_scoring_sim(text, frames, tau=0.1)):
        np.testing.assert_allclose(s, expected, atol=1e-6)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan")])
def test_query_scoring_rejects_a_non_positive_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        query_scoring_sim(np.ones((1, 2)), np.ones((1, 1, 2)), tau=tau)


# ---- masks -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [maxpool_sim, mean_pooling_sim, query_scoring_sim])
def test_padded_batch_matches_scoring_each_unpadded_video(fn, ragged):
    text, videos = ragged
    frames, mask = pad_frames(videos)
    batched = fn(text, frames, frame_mask=mask)
    for b, v in enumerate(videos):
        np.testing.assert_allclose(batched[:, b], fn(text, v[None])[:, 0], atol=1e-6)


@pytest.mark.parametrize("fn", [maxpool_sim, mean_pooling_sim, query_scoring_sim])
def test_padding_never_wins_even_when_it_matches_the_query(fn):
    text = np.array([[1.0, 0.0]], dtype=np.float32)
    frames = np.array([[[0.0, 1.0], [1.0, 0.0]]], dtype=np.float32)  # the padded slot is the perfect match
    mask = np.array([[True, False]])
    assert fn(text, frames, frame_mask=mask)[0, 0] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("fn", [maxpool_sim, mean_pooling_sim, query_scoring_sim])
def test_a_video_with_no_valid_frame_scores_minus_inf_and_never_nan(fn, ragged):
    text, videos = ragged
    frames, mask = pad_frames(videos)
    mask[2] = False
    s = fn(text, frames, frame_mask=mask)
    assert np.all(s[:, 2] == -np.inf)
    assert not np.isnan(s).any()
    assert np.isfinite(np.delete(s, 2, axis=1)).all()


def test_pad_frames_stacks_ragged_videos_with_a_mask():
    frames, mask = pad_frames([np.ones((2, 3)), np.zeros((0, 3)), 2 * np.ones((1, 3))])
    assert frames.shape == (3, 2, 3) and frames.dtype == np.float32
    assert mask.tolist() == [[True, True], [False, False], [True, False]]
    assert frames[2, 1].tolist() == [0, 0, 0] and frames[2, 0].tolist() == [2, 2, 2]
    with pytest.raises(ValueError):
        pad_frames([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError):
        pad_frames([])


# ---- blocks -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [maxpool_sim, mean_pooling_sim, query_scoring_sim])
@pytest.mark.parametrize("block", [1, 2, 3, 5, 100])
def test_blocks_give_the_same_result_as_one_pass(fn, block, ragged):
    text, videos = ragged
    frames, mask = pad_frames(videos)
    mask[4] = False
    whole = fn(text, frames, frame_mask=mask, block=len(videos))
    np.testing.assert_allclose(fn(text, frames, frame_mask=mask, block=block), whole, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fn(text, frames, frame_mask=mask), whole, rtol=1e-6, atol=1e-7)


def test_maxpool_matches_brute_force_over_a_larger_random_batch():
    rng = np.random.default_rng(2)
    text = _unit(rng.normal(size=(5, 12))).astype(np.float32)
    frames = _unit(rng.normal(size=(23, 6, 12))).astype(np.float32)
    mask = rng.random((23, 6)) < 0.7
    brute = np.einsum("ad,bfd->abf", text, frames)
    brute = np.where(mask[None], brute, -np.inf).max(axis=2)
    np.testing.assert_allclose(maxpool_sim(text, frames, mask, block=4), brute, atol=1e-6)


@pytest.mark.parametrize("block", [0, -1, 1.5, True])
def test_block_must_be_a_positive_integer(block):
    with pytest.raises(ValueError, match="block"):
        maxpool_sim(np.ones((1, 2)), np.ones((1, 1, 2)), block=block)


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    text = np.array([[1.0, 0.0]], dtype=np.float32)
    frames = np.array([[[1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)
    out = maxpool_sim(torch.from_numpy(text), torch.from_numpy(frames), torch.tensor([[True, True]]))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out[0, 0] == pytest.approx(1.0)


def test_shape_errors_name_the_expected_shapes():
    with pytest.raises(ValueError, match=r"\(A, D\)"):
        maxpool_sim(np.ones(2), np.ones((1, 1, 2)))
    with pytest.raises(ValueError, match=r"\(B, F, D\)"):
        maxpool_sim(np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="frame_mask"):
        maxpool_sim(np.ones((1, 2)), np.ones((1, 3, 2)), frame_mask=np.ones((1, 2), bool))


# ---- CLIPRerank -------------------------------------------------------------------------------------------------
def test_clip_rerank_hand_computed():
    init = np.array([0.5, 0.2])
    sims = np.array([[0.1, 0.3], [0.9, 0.4]])
    out = clip_rerank(init, sims, alpha=0.4)
    np.testing.assert_allclose(out, [0.4 * 0.5 + 0.6 * 0.3, 0.4 * 0.2 + 0.6 * 0.9], atol=1e-6)
    assert out.dtype == np.float32


def test_clip_rerank_alpha_one_keeps_the_initial_order_and_alpha_zero_is_max_pooling():
    rng = np.random.default_rng(3)
    init = rng.random(10)
    sims = rng.random((10, 5))
    mask = rng.random((10, 5)) < 0.8
    mask[:, 0] = True
    np.testing.assert_array_equal(np.argsort(-clip_rerank(init, sims, mask, alpha=1.0)), np.argsort(-init))
    np.testing.assert_allclose(clip_rerank(init, sims, mask, alpha=1.0), init, atol=1e-7)
    best_frame = np.where(mask, sims, -np.inf).max(1)
    np.testing.assert_allclose(clip_rerank(init, sims, mask, alpha=0.0), best_frame, atol=1e-7)


def test_clip_rerank_ignores_padded_frames_and_sinks_frameless_candidates():
    init = np.array([0.5, 0.5, 0.9])
    sims = np.array([[0.1, 0.99], [0.2, 0.3], [0.8, 0.8]])
    mask = np.array([[True, False], [True, True], [False, False]])
    out = clip_rerank(init, sims, mask, alpha=0.5)
    np.testing.assert_allclose(out[:2], [0.5 * 0.5 + 0.5 * 0.1, 0.5 * 0.5 + 0.5 * 0.3], atol=1e-6)
    assert out[2] == -np.inf
    assert clip_rerank(init, sims, mask, alpha=1.0)[2] == pytest.approx(0.9)


def test_clip_rerank_min_max_normalisation_is_per_query():
    init = np.array([[10.0, 20.0, 30.0], [1.0, 1.0, 1.0]])
    sims = np.array([[[0.1], [0.3], [0.2]], [[0.5], [0.7], [0.6]]])
    out = clip_rerank(init, sims, alpha=0.5, normalize=True)
    np.testing.assert_allclose(out[0], [0.0, 0.5 * 0.5 + 0.5 * 1.0, 0.5 * 1.0 + 0.5 * 0.5], atol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, 0.5, 0.25], atol=1e-6)  # constant initial row -> 0


def test_clip_rerank_validates_alpha_and_shapes():
    with pytest.raises(ValueError, match="alpha"):
        clip_rerank(np.ones(2), np.ones((2, 3)), alpha=1.5)
    with pytest.raises(ValueError, match="frame_sims"):
        clip_rerank(np.ones(2), np.ones((3, 3)))


# ---- helpers ----------------------------------------------------------------------------------------------------
def test_mean_pool_vectors_normalises_the_raw_mean():
    out = mean_pool_vectors(np.array([[2.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(out, np.array([2.0, 1.0]) / np.sqrt(5), atol=1e-7)
    assert out.shape == (2,) and out.dtype == np.float32
    with pytest.raises(ValueError):
        mean_pool_vectors(np.zeros((0, 2)))


def test_mean_pool_vectors_agrees_with_mean_pooling_sim(ragged):
    text, videos = ragged
    frames, mask = pad_frames(videos)
    pooled = np.stack([mean_pool_vectors(v) for v in videos])
    np.testing.assert_allclose(text @ pooled.T, mean_pooling_sim(text, frames, mask), atol=1e-6)


def test_best_frame_returns_time_and_score_of_the_best_valid_frame():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    scores = np.array([[0.1, 0.9, 0.3, 0.95], [0.5, 0.2, 0.5, 0.1], [0.3, 0.3, 0.3, 0.3]])
    mask = np.array([[True, True, True, False], [True, True, True, True], [False, False, False, False]])
    tb, sb = best_frame(t, scores, mask)
    assert tb[0] == 1.0 and sb[0] == pytest.approx(0.9)  # the padded 0.95 does not count
    assert tb[1] == 0.0 and sb[1] == pytest.approx(0.5)  # first of tied frames
    assert np.isnan(tb[2]) and sb[2] == -np.inf
    tb2, _ = best_frame(np.tile(t, (3, 1)) + 10, scores, mask)  # per-video times
    assert tb2[0] == 11.0


def test_frame_segments_on_a_hand_made_score_curve():
    t = np.arange(12, dtype=float)
    s = np.array([0.1, 0.6, 0.7, 0.2, 0.1, 0.8, 0.9, 0.85, 0.3, 0.65, 0.1, 0.55])
    segs = frame_segments(t, s, threshold=0.5)
    assert segs == [
        Segment(5.0, 7.0, 6.0, 0.9),
        Segment(1.0, 2.0, 2.0, 0.7),
        Segment(9.0, 9.0, 9.0, 0.65),
        Segment(11.0, 11.0, 11.0, 0.55),
    ]
    # a 2 s gap bridges the dip at t = 10 but not the 3-frame dip between 2 and 5
    bridged = frame_segments(t, s, threshold=0.5, max_gap=2.0)
    assert [(g.start, g.end) for g in bridged] == [(5.0, 11.0), (1.0, 2.0)]
    # min_len drops one-frame segments
    assert [(g.start, g.end) for g in frame_segments(t, s, 0.5, min_len=1.0)] == [(5.0, 7.0), (1.0, 2.0)]


def test_frame_segments_with_uneven_times_and_no_passing_frame():
    t = np.array([4.0, 0.0, 2.0, 6.0])  # unsorted input is sorted by time
    s = np.array([0.9, 0.1, 0.8, np.nan])
    assert frame_segments(t, s, 0.5) == [Segment(2.0, 4.0, 4.0, 0.9)]
    assert frame_segments(t, s, 0.95) == []


# ---- sampling plans ---------------------------------------------------------------------------------------------
def test_sample_times_fps():
    np.testing.assert_allclose(sample_times_fps(10.0, 1.0), np.arange(10.0))
    np.testing.assert_allclose(sample_times_fps(10.0, 0.5), [0, 2, 4, 6, 8])
    np.testing.assert_allclose(sample_times_fps(0.3, 10), [0.0, 0.1, 0.2])  # 0.3 itself is past the end
    np.testing.assert_allclose(sample_times_fps(0.2, 1.0), [0.0])  # every video gets a frame
    np.testing.assert_allclose(sample_times_fps(0.0, 1.0), [0.0])


def test_sample_times_chunks_takes_the_middle_of_each_chunk():
    np.testing.assert_allclose(sample_times_chunks(10.0, 4), [1.25, 3.75, 6.25, 8.75])
    np.testing.assert_allclose(sample_times_chunks(3.0, 1), [1.5])


@pytest.mark.parametrize("fps", [0, -1, float("nan"), float("inf"), "fast"])
def test_sample_times_fps_rejects_bad_rates_with_a_readable_message(fps):
    with pytest.raises(ValueError, match="fps must be a positive number"):
        sample_times_fps(10.0, fps)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_sample_times_chunks_rejects_bad_counts(n):
    with pytest.raises(ValueError, match="n must be a positive whole number"):
        sample_times_chunks(10.0, n)


@pytest.mark.parametrize("duration", [-1.0, float("nan"), float("inf")])
def test_sampling_rejects_bad_durations(duration):
    with pytest.raises(ValueError, match="duration"):
        sample_times_fps(duration, 1.0)
    with pytest.raises(ValueError, match="duration"):
        sample_times_chunks(duration, 4)

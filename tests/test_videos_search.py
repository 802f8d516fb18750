"""Video search over synthetic frame vectors (raw-vector API): the pipeline against a brute-force oracle built from
the pure functions, the candidate union, pooling and alpha limits, segments, filters and frame results."""
from __future__ import annotations

import numpy as np
import pytest

from clipdex.synthetic.videos import synthetic_video_index
from retrieval.algorithms.video import clip_rerank, maxpool_sim, mean_pooling_sim, pad_frames, query_scoring_sim
from retrieval.errors import InvalidInput
from retrieval.query.video import VideoSearchOptions, search_frames, search_videos

D = 16


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    ix, truth = synthetic_video_index(tmp_path_factory.mktemp("vsyn") / "ix", 40, 9, D, seed=3)
    return ix, truth


def _oracle(truth, q, pool, alpha, tau=0.1):
    """Every video scored exhaustively with the pure functions: {video id: score}."""
    ids = sorted(truth)
    V, mask = pad_frames([truth[i][0] for i in ids])
    initial = mean_pooling_sim(q[None], V, mask)[0]  # the video vector's score: the first stage
    sims = np.einsum("nfd,d->nf", V, q)
    if pool == "max":  # CLIPRerank proper
        return dict(zip(ids, clip_rerank(initial, sims, mask, alpha)))
    pooled = initial if pool == "mean" else query_scoring_sim(q[None], V, tau, mask)[0]
    assert np.allclose(maxpool_sim(q[None], V, mask)[0], sims.max(1, where=mask, initial=-np.inf))
    return dict(zip(ids, alpha * initial + (1 - alpha) * pooled))


@pytest.mark.parametrize("pool", ["max", "mean", "query-scoring"])
@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_with_every_video_a_candidate_the_ranking_is_the_exhaustive_one(syn, pool, alpha):
    ix, truth = syn
    rng = np.random.default_rng(7)
    for _ in range(3):
        q = rng.standard_normal(D).astype(np.float32)
        q /= np.linalg.norm(q)
        res = search_videos(ix, vectors=q, k=10, options=VideoSearchOptions(pool=pool, alpha=alpha, candidates=40))
        ref = _oracle(truth, q, pool, alpha)
        best = sorted(ref, key=lambda i: -ref[i])[:10]
        np.testing.assert_allclose(res.column("score").to_numpy(), [ref[i] for i in best], atol=1e-5)
        got = res.column("id").to_pylist()
        ties = np.isclose(np.array([ref[i] for i in got]), np.array([ref[i] for i in best]), atol=1e-5)
        assert all(g == b or t for g, b, t in zip(got, best, ties))


def test_a_frame_of_a_video_finds_that_video_at_that_time(syn):
    ix, truth = syn
    for vid in (0, 7, 23):
        frames, t = truth[vid]
        j = len(frames) // 2
        res = search_videos(ix, vectors=frames[j], k=3, options=VideoSearchOptions(candidates=5))
        assert res.column("id")[0].as_py() == vid
        assert res.column("t_best")[0].as_py() == pytest.approx(t[j])
        assert res.column("frame_score")[0].as_py() == pytest.approx(1.0, abs=1e-5)


def test_candidates_come_from_frames_even_when_the_video_vector_misses(tmp_path):
    """A long video whose pooled vector points elsewhere is found through its one matching frame."""
    from retrieval.algorithms.video import mean_pool_vectors
    from retrieval.index.directory import create_index

    rng = np.random.default_rng(0)
    ix = create_index(tmp_path / "ix", dim=D, model="none")
    target = rng.standard_normal(D).astype(np.float32)
    target /= np.linalg.norm(target)
    videos = []
    for _ in range(30):  # decoys whose pooled vectors are close to the target, but no frame is
        x = target + 1.5 * rng.standard_normal((4, D))
        videos.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    long = -np.tile(target, (30, 1)) + 0.3 * rng.standard_normal((30, D))
    long[17] = target
    videos.append(long / np.linalg.norm(long, axis=1, keepdims=True))
    pooled = np.stack([mean_pool_vectors(v) for v in videos])
    ids = ix.add_vectors("videos", pooled, {"path": [str(i) for i in range(31)]})
    ix.add_vectors("frames", np.concatenate(videos), {
        "video_id": np.concatenate([np.full(len(v), i) for i, v in zip(ids, videos)]),
        "t": np.concatenate([np.arange(len(v), dtype=float) for v in videos])})
    res = search_videos(ix, vectors=target, k=1, options=VideoSearchOptions(candidates=3, alpha=0.0))
    assert res.column("id")[0].as_py() == 30 and res.column("t_best")[0].as_py() == 17.0


def test_padding_never_wins_a_short_video_against_a_long_one(syn):
    ix, truth = syn
    short = min(truth, key=lambda i: len(truth[i][0]))
    q = -truth[short][0].mean(0)  # far from the short video's only frames
    q /= np.linalg.norm(q)
    res = search_videos(ix, vectors=q, k=40, options=VideoSearchOptions(candidates=40))
    ranked = res.column("id").to_pylist()
    assert ranked.index(short) >= len(ranked) - 5 and np.isfinite(res.column("score").to_numpy()).all()


def test_segments_cover_the_runs_of_matching_frames(tmp_path):
    from retrieval.algorithms.video import mean_pool_vectors
    from retrieval.index.directory import create_index

    rng = np.random.default_rng(1)
    q = np.eye(D, dtype=np.float32)[0]
    other = np.eye(D, dtype=np.float32)[1]
    frames = np.stack([q if 3 <= i <= 5 or 9 <= i <= 10 else other for i in range(14)])
    frames = frames + 0.01 * rng.standard_normal(frames.shape).astype(np.float32)
    frames /= np.linalg.norm(frames, axis=1, keepdims=True)
    ix = create_index(tmp_path / "ix", dim=D, model="none")
    ix.add_vectors("videos", mean_pool_vectors(frames)[None], {"path": ["v.mp4"]})
    ix.add_vectors("frames", frames, {"video_id": np.zeros(14, int), "t": np.arange(14) * 0.5})
    res = search_videos(ix, vectors=q, k=1, options=VideoSearchOptions(segments=True, threshold=0.5))
    segs = res.column("segments")[0].as_py()
    assert [(s["start"], s["end"]) for s in sorted(segs, key=lambda s: s["start"])] == [(1.5, 2.5), (4.5, 5.0)]
    auto = search_videos(ix, vectors=q, k=1, options=VideoSearchOptions(segments=True)).column("segments")[0].as_py()
    assert len(auto) == 2  # default threshold: the best frame score minus 0.05


def test_where_filters_videos_from_both_shortlists(syn):
    ix, truth = syn
    frames, _ = truth[5]
    res = search_videos(ix, vectors=frames[0], k=5, where="path != 'v5.mp4'")
    assert 5 not in res.column("id").to_pylist() and len(res) == 5


def test_min_score_keeps_only_the_videos_that_reach_it_with_ranks_from_one(syn):
    ix, truth = syn
    frames, _ = truth[5]
    full = search_videos(ix, vectors=frames[0], k=10)
    scores = full.column("score").to_pylist()
    cut = (scores[2] + scores[3]) / 2  # between the third and the fourth video
    res = search_videos(ix, vectors=frames[0], k=10, min_score=cut)
    assert res.column("id").to_pylist() == full.column("id").to_pylist()[:3]
    assert res.column("rank").to_pylist() == [1, 2, 3] and min(res.column("score").to_pylist()) >= cut


def test_frames_table_returns_single_frames_with_times(syn):
    ix, truth = syn
    frames, t = truth[11]
    res = search_frames(ix, vectors=frames[-1], k=3)
    assert res.column("video_id")[0].as_py() == 11 and res.column("t")[0].as_py() == pytest.approx(t[-1])


@pytest.mark.parametrize("bad", [dict(pool="min"), dict(tau=0), dict(alpha=1.5), dict(candidates=0),
                                 dict(threshold=float("nan"))])
def test_bad_options_are_refused(syn, bad):
    ix, truth = syn
    with pytest.raises(InvalidInput):
        search_videos(ix, vectors=truth[0][0][0], options=VideoSearchOptions(**bad))

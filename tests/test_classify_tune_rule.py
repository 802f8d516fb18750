"""`--tune` picks hyper-parameters the way a user expects (issue 20): every grid holds its zero-shot end and the
weakest augmentation within one standard error of the best tuning accuracy is kept, so a method whose retrieval
does not help falls back to zero-shot instead of a setting that won a small tuning split by chance."""
import numpy as np
import pytest

from retrieval.algorithms.arrays import one_hot, one_se_pick
from retrieval.algorithms.gda import gda_search_alpha
from retrieval.algorithms.tip_adapter import tip_adapter_search
from retrieval.algorithms.tipx import tipx_search


def _world(seed=0, C=6, D=24, n=300, noise=1.0):
    rng = np.random.default_rng(seed)
    T = rng.normal(size=(C, D)).astype(np.float32)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    y = rng.integers(0, C, n)
    f = T[y] + noise * rng.normal(size=(n, D)).astype(np.float32) / np.sqrt(D)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return rng, T, y, f


def test_one_se_pick_keeps_the_simplest_setting_the_split_cannot_tell_from_the_best():
    accs, simple = [0.80, 0.82, 0.83], [0.0, 1.0, 2.0]
    assert one_se_pick(accs, 200, simple) == 1  # SE 2.7 points: 0.82 is within it, 0.80 is not
    assert one_se_pick(accs, 20, simple) == 0   # a tiny split: all three are one
    assert one_se_pick(accs, 10**6, simple) == 2  # a huge split: only the best
    assert one_se_pick([0.5, 0.7, 0.7], 50, [3.0, 1.0, 1.0]) == 1  # equally simple: the first
    with pytest.raises(ValueError):
        one_se_pick([0.5], 10, [0.0, 1.0])


def test_searches_fall_back_to_zero_shot_when_the_support_is_noise():
    """Support images with random labels: the paper's grids (no zero end, best on 300 images) always add some of
    the cache; with the zero end and the one-SE rule, every search returns zero-shot CLIP."""
    rng, T, y, f = _world(noise=3.0)
    W = T.T.copy()
    S = rng.normal(size=(120, T.shape[1])).astype(np.float32)
    S /= np.linalg.norm(S, axis=1, keepdims=True)
    L = one_hot(rng.integers(0, T.shape[0], 120), T.shape[0])
    paper = tipx_search(f, y, S, L, W, search_step=(6, 10, 6))
    assert paper["alpha"] > 0 and paper["gamma"] > 0  # the paper's grid cannot say "none"
    hp = tipx_search(f, y, S, L, W, search_step=(6, 10, 6), rule="1se", with_zero=True)
    assert hp["alpha"] == 0 and hp["gamma"] == 0, hp
    a, _, _ = tip_adapter_search(f, y, S, L, W, search_step=(10, 6), rule="1se", with_zero=True)
    assert a == 0
    Wg = rng.normal(size=W.shape).astype(np.float32)
    alpha, _ = gda_search_alpha(f, y, W, Wg, np.zeros(T.shape[0], np.float32), rule="1se")
    assert alpha == min(1e-4, alpha)  # the smallest alpha of the grid


def test_searches_keep_augmentation_that_clearly_helps():
    """Support of the right class and a text classifier that only half knows the classes: the one-SE rule still
    adds the cache."""
    rng, T, y, f = _world(noise=1.5)
    W = (T + 1.2 * rng.normal(size=T.shape).astype(np.float32) / np.sqrt(T.shape[1])).T.copy()
    W /= np.linalg.norm(W, axis=0, keepdims=True)
    ys = np.repeat(np.arange(T.shape[0]), 20)
    S = T[ys] + 1.5 * rng.normal(size=(len(ys), T.shape[1])).astype(np.float32) / np.sqrt(T.shape[1])
    S /= np.linalg.norm(S, axis=1, keepdims=True)
    L = one_hot(ys, T.shape[0])
    hp = tipx_search(f, y, S, L, W, search_step=(6, 10, 6), rule="1se", with_zero=True)
    assert hp["alpha"] > 0 or hp["gamma"] > 0, hp
    a, _, acc = tip_adapter_search(f, y, S, L, W, search_step=(10, 6), rule="1se", with_zero=True)
    assert a > 0 and acc > float(np.mean(np.argmax(f @ W, 1) == y))


def test_reco_blend_search_keeps_zero_shot_unless_the_fuser_helps():
    from retrieval.algorithms.reco import reco_blend_logits, reco_search_blend  # torch: only this test needs it

    rng, T, y, f = _world(noise=3.0)
    zs = f @ T.T
    assert np.allclose(reco_blend_logits(zs, zs * 0 + 1, 0.0), zs)
    junk = rng.normal(size=zs.shape).astype(np.float32)
    assert reco_search_blend(zs, junk, y)[0] == 0.0
    good = one_hot(y, T.shape[0]) * 0.5 + 0.2 * junk  # a fuser whose scores name the class
    blend, acc = reco_search_blend(zs, good, y)
    assert blend > 0 and acc > float(np.mean(np.argmax(zs, 1) == y))


def test_eval_classify_tunes_the_trained_fuser_blend(classify_corpus, runner, cli, tmp_path):
    c = classify_corpus
    fuser = tmp_path / "fuser.pt"
    assert runner.invoke(cli, ["train-reco", c["support"], "--out", str(fuser), "--epochs", "1"]).exit_code == 0
    r = runner.invoke(cli, ["classify", c["test"], "--classes", c["classes"], "--support", c["support"],
                            "--method", "reco", "--fuser", str(fuser), "--tune", c["support_csv"]])
    assert r.exit_code == 0, r.output
    assert "reco: trained-fuser blend" in r.stderr and "searched on" in r.stderr

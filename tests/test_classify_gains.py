"""The gains world (clipdex.synthetic.gains): its sets are what they say, and on a small long tail, retrieval and
shots still help clipdex-tiny (the fast version of benchmarks/retrieval_gain.py)."""
import json

import numpy as np
import pytest

from clipdex.synthetic.gains import SHIFT_STYLES, corpus_rows, eval_scenes, render_styled
from clipdex.synthetic.world import SHAPES, held_out_pairs
from retrieval.algorithms.arrays import one_hot
from retrieval.algorithms.susx import sus_lc_select
from retrieval.algorithms.tip_adapter import tip_adapter_logits, tip_adapter_search
from retrieval.algorithms.tipx import tipx_logits, tipx_search
from retrieval.algorithms.zeroshot import build_text_classifier, get_templates
from retrieval.classify.accuracy import wilson_interval


def test_sets_hold_what_they_say():
    tail = set(held_out_pairs())
    longtail = eval_scenes("longtail", 24)
    assert all((s["objects"][0]["color"], s["objects"][0]["shape"]) in tail and style == "plain"
               for s, style in longtail)
    clean = eval_scenes("clean", 24)
    assert not any((s["objects"][0]["color"], s["objects"][0]["shape"]) in tail for s, _ in clean)
    assert {style for _, style in eval_scenes("shifted", 64)} == set(SHIFT_STYLES)
    assert [s["objects"][0]["shape"] for s, _ in longtail[:8]] == list(SHAPES)  # classes cycle: balanced sets
    assert eval_scenes("clean", 5, seed=1) == eval_scenes("clean", 5, seed=1) != eval_scenes("clean", 5, seed=2)


def test_corpus_is_web_like_with_a_rare_tail():
    rows = corpus_rows(2000, tail=0.04)
    tail = set(held_out_pairs())
    shows_tail = np.mean([any((o["color"], o["shape"]) in tail for o in r["scene"]["objects"]) for r in rows])
    assert 0.02 < shows_tail < 0.08  # present, but rare
    kinds = {k: np.mean([r["caption_kind"] == k for r in rows]) for k in ("full", "partial", "wrong", "junk")}
    assert 0.5 < kinds["full"] < 0.7 and min(kinds.values()) > 0.05
    assert 0.25 < np.mean([r["style"] != "plain" for r in rows]) < 0.35


def test_wilson_interval():
    lo, hi = wilson_interval(700, 1000)
    assert lo == pytest.approx(0.6709, abs=1e-4) and hi == pytest.approx(0.7276, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def _encode(tiny, items, seed):
    return tiny.encode_images([render_styled(s, style, 64, seed * 1000 + i) for i, (s, style) in enumerate(items)])


@pytest.mark.slow
def test_retrieval_and_shots_help_on_the_long_tail(tiny):
    """Held-out colour-shape pairs: zero-shot is weak; SuS-X (support retrieved from a 700-picture captioned corpus,
    TIP-X tuned on a separate split) must beat it by 4 points or more (+6.2 when written) and Tip-Adapter (4 shots
    per class, tuned) by more than the 95% interval of zero-shot on these 160 pictures. Seeded: the numbers are
    fixed, a drop means a method stopped helping."""
    classes = list(SHAPES)
    W = build_text_classifier(classes, get_templates("openai80"), tiny.encode_texts)
    rows = corpus_rows(700, seed=0)
    corpus = _encode(tiny, [(r["scene"], r["style"]) for r in rows], 1)
    test, tune, shots = (eval_scenes("longtail", n, seed) for n, seed in ((160, 0), (80, 100), (32, 200)))
    f, vf, sf = _encode(tiny, test, 2), _encode(tiny, tune, 3), _encode(tiny, shots, 4)
    y, vy, sy = (np.array([classes.index(s["objects"][0]["shape"]) for s, _ in items]) for items in (test, tune, shots))

    def acc(z):
        return float(np.mean(np.argmax(z, 1) == y))

    zeroshot = acc(f @ W)
    _, hi = wilson_interval(round(zeroshot * len(y)), len(y))
    queries = [q[None] for q in tiny.encode_texts([f"A photo of a {c}." for c in classes])]
    ids, labels = sus_lc_select(queries, corpus, per_class=50)
    S, L = corpus[ids], one_hot(labels, len(classes))
    hp = tipx_search(vf, vy, S, L, W, search_step=(10, 50, 25))
    susx = acc(tipx_logits(f, S, L, W, alpha=hp["alpha"], beta=hp["beta"], gamma=hp["gamma"]))
    keys, values = sf, one_hot(sy, len(classes))
    a, b, _ = tip_adapter_search(vf, vy, keys, values, W)
    tip = acc(tip_adapter_logits(f, keys, values, W, a, b))
    assert zeroshot < 0.85, zeroshot  # the long tail is where zero-shot is weak
    assert susx - zeroshot >= 0.04, (zeroshot, susx, hp)
    assert tip > hi, (zeroshot, tip)


def test_eval_classify_tunes_on_a_split_and_takes_fusers(classify_corpus, runner, cli, tmp_path):
    """`clipdex eval classify --tune` searches the hyper-parameters on another split (never the evaluated set);
    `--fuser` scores RECO with trained fusers."""
    c = classify_corpus
    base = ["eval", "classify", c["labels"], "--classes", c["classes"], "--support", c["support"], "--json"]
    r = runner.invoke(cli, [*base, "--method", "tip", "--shots", c["shots"], "--tune", c["labels"]])
    assert r.exit_code != 0 and "the tuning split must not be the evaluated set" in r.output
    r = runner.invoke(cli, [*base, "--method", "tip", "--shots", c["shots"], "--tune", c["support_csv"]])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.splitlines()[-1])["summary"]["accuracy"]["tip"]["n"] == 24
    fuser = tmp_path / "fuser.pt"
    assert runner.invoke(cli, ["train-reco", c["support"], "--out", str(fuser), "--epochs", "1"]).exit_code == 0
    r = runner.invoke(cli, [*base, "--method", "reco", "--fuser", str(tmp_path / "missing.pt")])
    assert r.exit_code != 0  # the fuser is read: a missing file is refused
    r = runner.invoke(cli, [*base, "--method", "reco", "--fuser", str(fuser)])
    assert r.exit_code == 0, r.output


def test_reco_weight_search_keeps_zero_shot_unless_retrieval_helps():
    from retrieval.algorithms.reco import reco_search_weight  # torch: only this test needs it

    rng = np.random.default_rng(0)
    C, D, n, k = 4, 16, 200, 5
    T = rng.normal(size=(C, D)).astype(np.float32)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    y = rng.integers(0, C, n)
    f = T[y] + 1.2 * rng.normal(size=(n, D)).astype(np.float32)  # a weak zero-shot signal
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    noise = rng.normal(size=(n, k, D)).astype(np.float32)
    w, acc = reco_search_weight(f, y, noise, T, rng.normal(size=(C, k, D)).astype(np.float32))
    useful = T[y][:, None, :] + 0.3 * noise  # the neighbours' texts name the right class
    w2, acc2 = reco_search_weight(f, y, useful, T, T[:, None, :].repeat(k, 1))
    assert w2 > 0 and acc2 > acc
    zero_shot = float(np.mean(np.argmax(f @ T.T, 1) == y))
    assert acc >= zero_shot and (w == 0 or acc > zero_shot)  # 0 is in the grid: never below zero-shot on val


def test_classify_reco_tunes_its_weight_on_the_split(classify_corpus, runner, cli):
    c = classify_corpus
    r = runner.invoke(cli, ["classify", c["test"], "--classes", c["classes"], "--method", "reco", "--support",
                            c["support"], "--tune", c["support_csv"]])
    assert r.exit_code == 0, r.output
    assert "reco: mean-fusion weight" in r.stderr and "searched on" in r.stderr

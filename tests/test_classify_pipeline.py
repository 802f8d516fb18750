"""The classification pipeline with the tiny model: every method on generated shapes, block streaming equal to the
whole-matrix math, the SuS-LC cache, images encoded once, accuracy, and bad inputs."""
import logging
import re

import numpy as np
import pytest

from clipdex.synthetic.classify import CLASSES
from retrieval.algorithms import DEFAULT_TIPX, sus_lc_select, tipx_logits, xmore_predict_batch
from retrieval.algorithms.arrays import softmax
from retrieval.algorithms.tip_adapter import DEFAULT_ALPHA
from retrieval.classify import support as support_mod
from retrieval.classify.inputs import find_images, read_labels
from retrieval.classify.pipeline import ClassificationRun, ClassifyOptions
from retrieval.errors import InvalidInput, ModelMismatch


@pytest.fixture(scope="module")
def data(classify_corpus):
    return classify_corpus


@pytest.fixture(scope="module")
def test_set(data):
    paths, _ = find_images([data["test"]])
    return paths, read_labels(data["labels"])


def make_run(tiny, data, **kw):
    kw.setdefault("templates", "simple7")
    return ClassificationRun(CLASSES, ClassifyOptions(**kw), tiny).prepare()


def test_every_method_gives_one_sorted_distribution_per_image(tiny, data, test_set):
    paths, labels = test_set
    run = make_run(tiny, data, methods=["all", "xmore-stream"], support=data["support"], shots=data["shots"], top_k=3)
    assert [r.name for r in run.runners] == ["zeroshot", "susx", "xmore", "reco", "tip", "tipx", "gda", "proker",
                                             "xmore-stream"]
    preds = list(run.predict(paths, labels))
    run.close()
    assert [p.path for p in preds] == paths and all(p.label in CLASSES for p in preds)
    for p in preds:
        for top in p.top.values():
            probs = [q for _, q in top]
            assert len(top) == 3 and len({c for c, _ in top}) == 3 and all(c in CLASSES for c, _ in top)
            assert probs == sorted(probs, reverse=True) and all(0 <= q <= 1 for q in probs)
    summary = run.evaluation.summary()
    for method, s in summary.items():  # accuracy agrees with the printed predictions
        hits = sum(p.top[method][0][0] == p.label for p in preds)
        assert s["n"] == 24 and s["top1"] == pytest.approx(100 * hits / 24)
        assert s["top5"] == 100.0  # 4 classes: the true one is always among the top 5
        assert sum(c for _, _, c in s["confused"]) <= 24 - hits


def test_streamed_blocks_equal_the_whole_matrix(tiny, data, test_set):
    paths, _ = test_set
    whole = make_run(tiny, data, methods=["susx", "xmore"], support=data["support"], per_class=6)
    small = make_run(tiny, data, methods=["susx", "xmore"], support=data["support"], per_class=6,
                     memory_budget=48 * 30 * 5)  # a few rows per block
    kept, feats = whole.encode(paths)
    got_whole = {}
    for sl, probs in whole.predict_features(feats):
        assert sl == slice(0, len(feats))
        got_whole = probs
    parts = list(small.predict_features(feats))
    assert len(parts) > 3
    for name in ("susx", "xmore"):
        np.testing.assert_allclose(np.concatenate([p[name] for _, p in parts]), got_whole[name], atol=1e-5)
    # and the whole-run result is the pure function's, on the same support set
    r = whole.runners[0]
    ref = softmax(tipx_logits(feats, r.S, r.L, whole.W, **DEFAULT_TIPX), axis=1)
    np.testing.assert_allclose(got_whole["susx"], ref, atol=1e-5)
    x = whole.runners[1]
    zi, zc = x._logits(feats, slice(0, len(feats)))
    p = xmore_predict_batch(zi, zc)
    np.testing.assert_allclose(got_whole["xmore"], p / p.sum(1, keepdims=True), atol=1e-6)
    whole.close()
    small.close()


def test_support_set_is_cached_and_reused(tiny, data):
    before = support_mod.cache_reads
    run = make_run(tiny, data, methods=["susx"], support=data["support"], per_class=11)  # a key no other test uses
    first = run.runners[0].S.copy()
    cache = run.ix.path / "cache"
    files = {p.name: p.stat().st_mtime_ns for p in cache.glob("susx-*.npz")}
    run.close()
    assert files and support_mod.cache_reads == before
    again = make_run(tiny, data, methods=["susx"], support=data["support"], per_class=11)
    assert support_mod.cache_reads == before + 1 and any("from cache" in n for n in again.notes)
    np.testing.assert_array_equal(again.runners[0].S, first)
    again.close()
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("susx-*.npz")} == files  # read, not rewritten
    other = make_run(tiny, data, methods=["susx"], support=data["support"], per_class=10)  # other key, new file
    other.close()
    assert support_mod.cache_reads == before + 1 and len(list(cache.glob("susx-*.npz"))) == len(files) + 1


def test_store_sus_lc_agrees_with_the_dense_selection(tiny, data):
    from retrieval.index.directory import open_index
    from retrieval.store.base import arrow_to_vectors

    with open_index(data["support"]) as ix:
        rows = ix.store.take("images", np.arange(48), ["id", "vector"])
        x, _ = arrow_to_vectors(rows.column("vector"), ix.dim)
        ids = rows.column("id").to_numpy()
        queries = [[f"A photo of a {c}."] for c in CLASSES]
        s = support_mod.sus_lc_support(ix, tiny, CLASSES, queries, per_class=7, dedup_ip=0.99, use_cache=False)
    q = [tiny.encode_texts(qs) for qs in queries]
    idx, lab = sus_lc_select(q, x, per_class=7, dedup_ip=0.99)
    np.testing.assert_array_equal(s.labels, lab)
    np.testing.assert_array_equal(s.ids, ids[idx])
    np.testing.assert_allclose(s.feats, x[idx], atol=1e-6)


def test_all_methods_encode_each_image_once(tiny, data, test_set):
    paths, _ = test_set
    run = make_run(tiny, data, methods=["all"], support=data["support"])
    calls = []
    real = tiny.encode_prepared
    tiny.encode_prepared = lambda pixels: calls.append(len(pixels)) or real(pixels)
    try:
        preds = list(run.predict(paths))
    finally:
        del tiny.encode_prepared
        run.close()
    assert len(preds) == 24 and sum(calls) == 24 and len(preds[0].top) == 4


def test_reco_retrieval_is_uni_modal_search_then_the_paired_modality(tiny, data):
    from retrieval.index.directory import open_index

    with open_index(data["support"]) as ix:
        ids, img, txt = support_mod.memory_pairs(ix)
        q = img[:3]
        got = support_mod.image_to_texts(ix, q, 4)
        want = txt[np.argsort(-(q @ img.T), axis=1, kind="stable")[:, :4]]
        np.testing.assert_allclose(np.sort(got.sum(2), 1), np.sort(want.sum(2), 1), atol=1e-4)
        t = txt[5:7]
        got = support_mod.text_to_images(ix, t, 3)
        want = img[np.argsort(-(t @ txt.T), axis=1, kind="stable")[:, :3]]
        np.testing.assert_allclose(np.sort(got.sum(2), 1), np.sort(want.sum(2), 1), atol=1e-4)


def test_train_reco_checkpoints_resumes_and_the_fuser_classifies(tiny, data, tmp_path, test_set):
    from retrieval.classify.train import train_reco_on_index

    out = tmp_path / "fuser.pt"
    seen = []
    r1 = train_reco_on_index(data["support"], out, epochs=1, k=4, batch_size=16, seed=0, on_progress=seen.append)
    assert r1["pairs"] == 48 and r1["epochs"] == 1 and out.is_file()
    assert [(p.done, p.total) for p in seen if p.stage == "epoch"] == [(1, 1)] and "loss" in seen[-1].counts
    r2 = train_reco_on_index(data["support"], out, epochs=2, k=4, batch_size=16, seed=0, resume=True)
    assert [h["epoch"] for h in r2["history"]] == [1, 2] and r2["history"][0] == r1["history"][0]
    run = make_run(tiny, data, methods=["reco"], support=data["support"], fuser=str(out))
    preds = list(run.predict(test_set[0]))
    run.close()
    assert len(preds) == 24 and run.runners[0].params["fusion"] == "trained fuser"


@pytest.mark.parametrize("classes, message", [([], "no classes"), (["a", "b", "a"], "duplicated classes: 'a'")])
def test_bad_class_lists_are_refused(tiny, classes, message):
    with pytest.raises(InvalidInput, match=message):
        ClassificationRun(classes, ClassifyOptions(templates="single"), tiny)


def test_support_index_from_another_model_is_refused(tiny, tmp_path):
    from retrieval.index.directory import create_index

    with create_index(tmp_path / "raw.clipdex", dim=64, model="none") as ix:
        ix.add_vectors("images", np.random.default_rng(0).standard_normal((5, 64)))
    with pytest.raises(ModelMismatch, match="unknown model"):
        ClassificationRun(CLASSES, ClassifyOptions(methods=["susx"], support=str(tmp_path / "raw.clipdex"),
                                                   templates="single"), tiny).prepare()


def test_captionless_support_fails_xmore_and_reco_but_all_skips_them(tiny, data, caplog):
    for m in ("xmore", "reco"):
        with pytest.raises(InvalidInput, match="needs captions"):
            make_run(tiny, data, methods=[m], support=data["plain"])
    with caplog.at_level(logging.WARNING):
        run = make_run(tiny, data, methods=["all"], support=data["plain"], per_class=3)
    run.close()
    assert [r.name for r in run.runners] == ["zeroshot", "susx"]
    assert "skipping xmore" in caplog.text and "skipping reco" in caplog.text


def test_fewer_support_images_than_asked_warns(tiny, data, caplog):
    with caplog.at_level(logging.WARNING):
        run = make_run(tiny, data, methods=["susx", "xmore"], support=data["support"], per_class=5000, xmore_k=60)
    run.close()
    n_classes = len(run.classes) if hasattr(run, "classes") else None
    got = re.search(r"(\d+) classes got fewer than 5000 support images", caplog.text)  # more than the index holds
    assert got and (n_classes is None or int(got.group(1)) == n_classes), caplog.text
    assert "fewer than K = 60" in caplog.text


def test_shots_with_a_class_missing(tiny, data, tmp_path, caplog):
    import shutil

    shots = tmp_path / "shots"
    shutil.copytree(data["shots"], shots)
    shutil.rmtree(shots / "star")
    with caplog.at_level(logging.WARNING):
        run = make_run(tiny, data, methods=["tip", "proker"], shots=str(shots))
    run.close()
    assert "no images for 1 classes (e.g. 'star')" in caplog.text
    with pytest.raises(InvalidInput, match="gda needs shots of every class; none for 'star'"):
        make_run(tiny, data, methods=["gda"], shots=str(shots))


def test_tune_reports_searched_values(tiny, data):
    run = make_run(tiny, data, methods=["tip", "gda"], shots=data["shots"], tune=data["shots"])
    run.close()
    tip, gda = run.runners
    j = (tip.params["alpha"] - 0.1) / (2.9 / 20)  # on Tip-Adapter's grid (with its zero-shot end), not its defaults
    i = (tip.params["beta"] - 0.1) / (6.9 / 200)
    assert (tip.params["alpha"] == 0 or abs(j - round(j)) < 1e-6) and abs(i - round(i)) < 1e-6
    assert tip.params["alpha"] != DEFAULT_ALPHA
    assert gda.params["alpha"] in tuple(10.0 ** i for i in range(-4, 3))

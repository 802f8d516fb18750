"""The classification methods come from one registry (what each needs, whether ``all`` has it), and a
``ClassificationRun`` does its work in explicit steps: constructing it computes nothing, ``prepare`` builds the
methods, ``predict`` encodes the images."""
import pytest

from clipdex.synthetic.classify import CLASSES
from retrieval.classify.inputs import find_images
from retrieval.classify.pipeline import ClassificationRun, ClassifyOptions
from retrieval.classify.registry import METHODS, resolve_methods
from retrieval.errors import IndexNotFound, InvalidInput


@pytest.fixture(scope="module")
def data(classify_corpus):
    return classify_corpus


def names(asked, **inputs):
    return [m.name for m in resolve_methods(asked, ClassifyOptions(**inputs))]


def test_all_means_every_method_the_given_inputs_allow():
    assert names(["all"]) == ["zeroshot"]
    assert names(["all"], support="s") == ["zeroshot", "susx", "xmore", "reco"]
    assert names(["all"], shots="k") == ["zeroshot", "tip", "tipx", "gda", "proker"]
    assert names(["all", "xmore-stream"], support="s")[-1] == "xmore-stream"  # not in all, but asked for
    assert names(["tip", "zeroshot", "tip"], shots="k") == ["tip", "zeroshot"]


@pytest.mark.parametrize("asked, message", [(["susx"], "--method susx needs --support"),
                                            (["gda"], "--method gda needs --shots"),
                                            (["all", "reco"], "--method reco needs --support"),
                                            (["zeroshot", "bogus"], "unknown method 'bogus'; choose from zeroshot")])
def test_a_method_without_its_input_or_unknown_is_refused(asked, message):
    with pytest.raises(InvalidInput, match=message):
        names(asked)


def test_every_registered_method_runs_through_the_cli(runner, cli, data):
    """The CLI's --method takes the registry's names: each runs and prints its own prediction."""
    args = ["classify", data["test"], "--classes", data["classes"], "--support", data["support"], "--shots",
            data["shots"], "--per-class", 5, "--templates", "single", "-k", 1]
    for name in METHODS:
        args += ["--method", name]
    r = runner.invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    first = r.stdout.splitlines()[0]
    assert all(f"{name}: " in first for name in METHODS), first


def test_constructing_a_run_does_no_work_and_prepare_does(tiny, data, monkeypatch, tmp_path):
    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded while constructing")

    opts = ClassifyOptions(methods=["zeroshot", "susx"], support=str(tmp_path / "missing.clipdex"), templates="single")
    with monkeypatch.context() as m:
        for name in ("encode_texts", "encode_long_texts", "encode_prepared", "encode_images"):
            m.setattr(tiny, name, no_encoding)
        run = ClassificationRun(CLASSES, opts, tiny)  # the support index is not even opened yet
    assert run.runners == [] and run.notes == [] and run.ix is None
    with pytest.raises(IndexNotFound, match="missing.clipdex"):
        run.prepare()
    run = ClassificationRun(CLASSES, ClassifyOptions(methods=["zeroshot"], templates="single"), tiny)
    assert [r.name for r in run.prepare().runners] == ["zeroshot"] and run.prepare().runners == run.runners
    paths, feats = run.encode(find_images([data["test"]])[0][:3])
    assert feats.shape == (3, tiny.dim)
    blocks = list(run.predict_features(feats))
    assert blocks[0][1]["zeroshot"].shape == (3, len(CLASSES))

"""``clipdex classify`` and ``clipdex train-reco`` end to end (CliRunner, tiny model, generated shapes)."""
import json

import pytest

from clipdex.synthetic.classify import CLASSES


@pytest.fixture(scope="module")
def data(classify_corpus):
    return classify_corpus


def invoke(runner, cli, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_one_line_per_image_with_top_k(runner, cli, data):
    r = invoke(runner, cli, "classify", data["test"], "--classes", data["classes"], "-k", 2, "--templates", "single",
               "--model", "clipdex-tiny")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 24 and all(line.startswith(data["test"]) for line in lines)
    for line in lines:
        fields = line.split()
        assert len(fields) == 5 and fields[1] in CLASSES and fields[3] in CLASSES
        assert float(fields[2]) >= float(fields[4])
    assert "classified 24 images with zeroshot" in r.stderr and "images/s" in r.stderr


def test_json_lines_and_accuracy_summary_with_labels(runner, cli, data):
    r = invoke(runner, cli, "classify", data["test"], "--classes", data["classes"], "--method", "susx", "--support",
               data["support"], "--labels", data["labels"], "--json", "--per-class", 5)
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    preds, summary = rows[:-1], rows[-1]["summary"]
    assert len(preds) == 24 and all(p["label"] in CLASSES for p in preds)
    top = preds[0]["predictions"]["susx"]
    assert len(top) == 4 and abs(sum(t["prob"] for t in top) - 1) < 1e-4
    hits = sum(p["predictions"]["susx"][0]["class"] == p["label"] for p in preds)
    acc = summary["accuracy"]["susx"]
    assert acc["n"] == 24 and acc["top1"] == pytest.approx(100 * hits / 24) and acc["top5"] == 100.0
    assert summary["images_per_s"] > 0


def test_all_methods_side_by_side_and_the_cache_reused(runner, cli, data):
    args = ["classify", data["test"], "--classes", data["classes"], "--method", "all", "--support", data["support"],
            "--shots", data["shots"], "--labels", data["labels"], "--per-class", 9]
    r = invoke(runner, cli, *args)
    assert r.exit_code == 0, r.output
    methods = ["zeroshot", "susx", "xmore", "reco", "tip", "tipx", "gda", "proker"]
    first = r.stdout.splitlines()[0]
    assert all(f"{m}: " in first for m in methods)
    table = r.stdout[r.stdout.index("accuracy on 24 labelled images"):].splitlines()
    assert [row.split()[0] for row in table[2:10]] == methods and "most confused" in table[10]
    assert "cached in" in r.stderr
    again = invoke(runner, cli, *args)
    assert again.exit_code == 0 and "from cache" in again.stderr
    assert again.stdout == r.stdout  # same support set, same predictions


def test_train_reco_then_classify_with_the_fuser(runner, cli, data, tmp_path):
    out = tmp_path / "fuser.pt"
    r = invoke(runner, cli, "train-reco", data["support"], "--out", out, "--epochs", 1, "-k", 4, "--batch-size", 16)
    assert r.exit_code == 0, r.output
    assert "epoch 1/1" in r.stderr and out.is_file() and "trained RECO fusers on 48 pairs" in r.stdout
    r = invoke(runner, cli, "train-reco", data["support"], "--out", out, "--epochs", 2, "-k", 4, "--batch-size", 16,
               "--resume", "--json")
    assert r.exit_code == 0 and "epoch 1/2" not in r.stderr and "epoch 2/2" in r.stderr
    assert json.loads(r.stdout)["epochs"] == 2
    r = invoke(runner, cli, "classify", data["test"], "--classes", data["classes"], "--method", "reco", "--support",
               data["support"], "--fuser", out, "--json")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 24


def _bad(tmp, data):
    (tmp / "empty.txt").write_text("# nothing\n\n")
    (tmp / "dup.txt").write_text("circle\nsquare\ncircle\n")
    (tmp / "raw").mkdir()
    return [
        (["--classes", tmp / "empty.txt"], "no classes given"),
        (["--classes", tmp / "dup.txt"], "duplicated classes: 'circle'"),
        (["--classes", data["classes"], "--method", "susx"], "needs --support"),
        (["--classes", data["classes"], "--method", "xmore", "--support", data["plain"]], "needs captions"),
        (["--classes", data["classes"], "--method", "reco", "--support", data["plain"]], "needs captions"),
        (["--classes", data["classes"], "--method", "nope"], "unknown method 'nope'"),
        (["--classes", data["classes"], "--method", "susx", "--support", tmp / "nope.clipdex"], "does not exist"),
        (["--classes", data["classes"], "--method", "gda", "--shots", tmp / "raw"], "no images of the given classes"),
        (["--classes", data["classes"], "--templates", tmp / "missing.txt"], "file not found"),
    ]


def test_bad_inputs_give_one_error_line_and_no_traceback(runner, cli, data, tmp_path):
    for extra, message in _bad(tmp_path, data):
        r = runner.invoke(cli, ["classify", data["test"], "--model", "clipdex-tiny", *map(str, extra)])
        assert r.exit_code == 1, (extra, r.output)
        assert r.stderr.strip().startswith("error:") and message in r.stderr, (extra, r.stderr)
        assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_support_index_of_another_model(runner, cli, data, tmp_path):
    import numpy as np

    from retrieval.index.directory import create_index

    with create_index(tmp_path / "raw.clipdex", dim=64, model="none") as ix:
        ix.add_vectors("images", np.random.default_rng(0).standard_normal((5, 64)))
    r = runner.invoke(cli, ["classify", data["test"], "--classes", data["classes"], "--method", "susx",
                            "--support", str(tmp_path / "raw.clipdex"), "--model", "clipdex-tiny"])
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "unknown model" in r.stderr
    r = runner.invoke(cli, ["classify", data["test"], "--classes", data["classes"], "--method", "susx",
                            "--support", str(tmp_path / "raw.clipdex")])  # the model would come from the index
    assert r.exit_code == 1 and r.stderr == (f"error: support index {tmp_path / 'raw.clipdex'} holds vectors of an "
                                             "unknown model; classify needs an index built with a CLIP model\n")


def test_warnings_are_single_lines_and_the_run_goes_on(runner, cli, data, tmp_path):
    import shutil

    shots = tmp_path / "shots"
    shutil.copytree(data["shots"], shots)
    shutil.rmtree(shots / "triangle")
    r = invoke(runner, cli, "classify", data["test"], "--classes", data["classes"], "--method", "all", "--shots",
               shots, "--support", data["support"], "--per-class", 5000)  # more than the whole support index
    assert r.exit_code == 0, r.output
    warnings = [w for w in r.stderr.splitlines() if w.startswith("warning:")]
    assert any("no images for 1 classes (e.g. 'triangle')" in w for w in warnings)
    assert any("skipping gda" in w for w in warnings)
    assert any("fewer than 5000 support images" in w for w in warnings)
    assert "gda: " not in r.stdout.splitlines()[0]

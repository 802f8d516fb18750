"""``clipdex eval``: retrieval metrics (recall@k, MRR, nDCG@10) from JSONL, CSV or COCO captions, classification
accuracy per method, and one-line errors for labels or paths that name nothing."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from clipdex.synthetic.world_sets import make_gallery
from retrieval.query.evaluate import ranking_metrics

TINY = "clipdex-tiny"


def test_ranking_metrics_match_their_definitions():
    hits = np.array([[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],   # first at rank 1
                     [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0],   # ranks 3 and 6, two relevant
                     [0] * 10 + [1]], bool)               # rank 11: past every k, mrr 1/11
    m = ranking_metrics(hits, np.array([1, 2, 1]))
    assert m["recall@1"].tolist() == [1, 0, 0] and m["recall@5"].tolist() == [1, 1, 0]
    assert m["recall@10"].tolist() == [1, 1, 0]
    assert m["mrr"] == pytest.approx([1, 1 / 3, 1 / 11])
    ideal = 1 + 1 / math.log2(3)
    assert m["ndcg@10"] == pytest.approx([1, (1 / math.log2(4) + 1 / math.log2(7)) / ideal, 0])


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    from click.testing import CliRunner

    from cli.main import cli

    root = tmp_path_factory.mktemp("eval")
    items = make_gallery(root / "images", ("red", "blue"), ("circle", "star"), per_pair=3, seed=5)
    r = CliRunner().invoke(cli, ["index", "images", str(root / "images"), "--index", str(root / "ix"), "--model",
                                 TINY, "--workers", "0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return root, items


def _run(runner, cli, *args):
    return runner.invoke(cli, ["eval", *[str(a) for a in args]], catch_exceptions=False)


def test_retrieval_from_jsonl_with_per_query_json_lines(indexed, runner, cli):
    root, items = indexed
    lines = [{"query": f"a {c} {s}", "relevant": [f"{s}/{c}_{i}.png" for i in range(3)]}
             for c in ("red", "blue") for s in ("circle", "star")]
    lines.append({"image": items[0]["path"], "relevant": items[0]["path"]})
    (root / "q.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = _run(runner, cli, "retrieval", root / "ix", root / "q.jsonl", "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    per, summary = rows[:-1], rows[-1]["summary"]
    assert len(per) == 5 and summary["queries"] == 5
    assert per[-1]["first_relevant_rank"] == 1  # an indexed image finds itself
    assert summary["recall@10"] == 1.0  # 12 images: every query's relevant items are within 10
    assert summary["recall@5"] >= 0.8  # the trained model knows colours: the 6 drawings of a colour come first
    assert summary["mrr"] == pytest.approx(np.mean([p["mrr"] for p in per]))


def test_retrieval_from_csv_and_coco_captions(indexed, runner, cli):
    root, items = indexed
    (root / "q.csv").write_text("query,relevant\n" + "".join(
        f"a {c} star,star/{c}_0.png|star/{c}_1.png|star/{c}_2.png\n" for c in ("red", "blue")))
    r = _run(runner, cli, "retrieval", root / "ix", root / "q.csv")
    assert r.exit_code == 0, r.output
    assert "2 queries" in r.stdout and "recall@1" in r.stdout and "ndcg@10" in r.stdout
    coco = {"images": [{"id": i, "file_name": f"images/{it['shape']}/{it['color']}_0.png"}
                       for i, it in enumerate(items) if it["path"].endswith("_0.png")]}
    coco["annotations"] = [{"image_id": im["id"], "caption": "a drawing"} for im in coco["images"]]
    (root / "coco.json").write_text(json.dumps(coco))
    r = _run(runner, cli, "retrieval", root / "ix", root / "coco.json", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.splitlines()[-1])["summary"]["queries"] == 4


def test_a_relevant_path_not_in_the_index_is_one_line(indexed, runner, cli):
    root, _ = indexed
    (root / "bad.jsonl").write_text(json.dumps({"query": "a red star", "relevant": ["nowhere/x.png"]}) + "\n")
    r = _run(runner, cli, "retrieval", root / "ix", root / "bad.jsonl")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "query 1" in r.stderr and "'nowhere/x.png' is not in the index" in r.stderr


@pytest.mark.parametrize("line,message", [
    ({"query": 42, "relevant": ["a.png"]}, "'query' must be a string, not int"),
    ({"query": ["a red star"], "relevant": ["a.png"]}, "'query' must be a string, not list"),
    ({"image": {"path": "a.png"}, "relevant": ["a.png"]}, "'image' must be a string, not dict"),
    ({"query": "a red star", "relevant": [1.5]}, "relevant items are paths"),
])
def test_a_query_of_the_wrong_type_is_one_line(indexed, runner, cli, line, message):
    root, _ = indexed
    (root / "typed.jsonl").write_text(json.dumps(line) + "\n")
    r = _run(runner, cli, "retrieval", root / "ix", root / "typed.jsonl")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "unexpected" not in r.stderr
    assert "line 1" in r.stderr and message in r.stderr


def test_coco_annotations_of_the_wrong_type_are_one_line(indexed, runner, cli):
    root, _ = indexed
    coco = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": [1], "caption": 7}]}
    (root / "coco.json").write_text(json.dumps(coco))
    r = _run(runner, cli, "retrieval", root / "ix", root / "coco.json")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "annotation 0" in r.stderr


def test_classification_top1_per_method_and_a_label_that_names_no_class(indexed, runner, cli):
    root, items = indexed
    (root / "classes.txt").write_text("red\nblue\n")  # colours: what the shipped clipdex-tiny knows best
    (root / "templates.txt").write_text("a {} shape\n")
    (root / "labels.csv").write_text("path,label\n" + "".join(f"{it['path']},{it['color']}\n" for it in items))
    r = _run(runner, cli, "classify", root / "labels.csv", "--classes", root / "classes.txt", "--model", TINY,
             "--templates", root / "templates.txt", "--json")
    assert r.exit_code == 0, r.output
    acc = json.loads(r.stdout)["summary"]["accuracy"]["zeroshot"]
    assert acc["n"] == 12 and acc["top1"] >= 90.0
    (root / "labels.csv").write_text("path,label\n" + "".join(f"{it['path']},green\n" for it in items[:2]) +
                                     "".join(f"{it['path']},{it['color']}\n" for it in items[2:]))
    r = _run(runner, cli, "classify", root / "labels.csv", "--classes", root / "classes.txt", "--model", TINY)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "label 'green' names no class" in r.stderr

"""``clipdex dedup`` and ``find_duplicates`` on generated near-duplicates with the tiny model: copies grouped with
their originals and named, hard negatives never grouped, incremental re-runs, the keep list, both backends, videos."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("imagehash")

from clipdex.synthetic.dedup import make_dedup_images  # noqa: E402
from retrieval.query.dedup import DedupOptions, find_duplicates  # noqa: E402

ARGS = ["-k", "20", "--min-score", "0.2"]  # clipdex-tiny's vectors barely see a framed copy as the same picture


def _index(runner, cli, src, ix, backend="lance"):
    res = runner.invoke(cli, ["index", "images", str(src), "--index", str(ix), "--model", "clipdex-tiny",
                              "--workers", "0", "--backend", backend, "--json"])
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from click.testing import CliRunner

    from cli.main import cli

    root = tmp_path_factory.mktemp("dedup")
    items = make_dedup_images(root / "img", n_originals=3, seed=5, negatives=2,
                              transforms=("jpeg", "crop", "screenshot", "rotate"))
    _index(CliRunner(), cli, root / "img", root / "ix.clipdex")
    return root, items


def _groups(runner, cli, ix, *extra):
    res = runner.invoke(cli, ["dedup", str(ix), *ARGS, "--json", *extra])
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines()], res.stderr


def test_copies_are_grouped_with_their_original_and_named_and_hard_negatives_never(corpus, runner, cli):
    root, items = corpus
    groups, summary = _groups(runner, cli, root / "ix.clipdex", "--kinds", "exact,near")
    of = {Path(m["path"]).name: g for g in groups for m in g["members"]}
    for it in items:
        name = Path(it.path).name
        if it.role == "negative":
            assert name not in of, f"hard negative {name} grouped"
        elif it.role in ("original", "exact", "near"):
            original = of.get(f"o{it.group:04d}.png")
            assert original is not None and of.get(name) is original, name
    for g in groups:
        by_name = {m["id"]: Path(m["path"]).name for m in g["members"]}
        for p in g["pairs"]:
            names = {by_name[p["a"]], by_name[p["b"]]}
            if any(n.endswith("-copy.png") for n in names) and any(n.endswith("-resaved.png") for n in names):
                assert p["kind"] == "exact"
        assert g["kind"] in ("exact", "near")
    assert "verified duplicates" in summary


def test_a_rerun_compares_only_new_rows_and_finds_their_duplicates(corpus, runner, cli, tmp_path):
    root, _ = corpus
    ix = tmp_path / "ix.clipdex"
    shutil.copytree(root / "ix.clipdex", ix)
    first = find_duplicates(ix, DedupOptions(k=20, min_score=0.2, fresh=True))  # forget the other tests' runs
    assert first.summary["searched"] == first.summary["rows"]
    again = find_duplicates(ix, DedupOptions(k=20, min_score=0.2))
    assert again.summary["searched"] == 0 and again.groups == first.groups
    src = tmp_path / "more"
    src.mkdir()
    shutil.copy(root / "img" / "o0001-jpeg2.jpg", src / "late-copy.jpg")
    _index(runner, cli, src, ix)
    third = find_duplicates(ix, DedupOptions(k=20, min_score=0.2))
    assert third.summary["searched"] == 1
    group = next(g for g in third.groups for m in g["members"] if m["path"].endswith("late-copy.jpg"))
    assert any(m["path"].endswith("o0001.png") for m in group["members"])


def test_keep_writes_a_list_of_files_to_remove_and_deletes_nothing(corpus, runner, cli, tmp_path):
    root, items = corpus
    out = tmp_path / "remove.txt"
    res = runner.invoke(cli, ["dedup", str(root / "ix.clipdex"), *ARGS, "--kinds", "exact,near", "--keep", "largest",
                              "--remove-list", str(out), "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    kept = {r["group"] for r in rows if r["keep"] == "true"}
    assert kept == {r["group"] for r in rows}  # one kept per group
    removed = out.read_text().splitlines()
    assert len(removed) == len(rows) - len(kept) and all(Path(p).exists() for p in removed)
    largest = [r for r in rows if r["keep"] == "true"]
    for r in largest:  # the kept file has the most pixels of its group
        pixels = [int(x["width"]) * int(x["height"]) for x in rows if x["group"] == r["group"]]
        assert int(r["width"]) * int(r["height"]) == max(pixels)
    assert "nothing was deleted" in res.stderr


def test_bad_input_is_one_line_and_a_nonzero_exit(corpus, runner, cli, tmp_path):
    root, _ = corpus
    for args in (["dedup", str(tmp_path / "none.clipdex")], ["dedup", str(root / "ix.clipdex"), "--table", "texts"],
                 ["dedup", str(root / "ix.clipdex"), "--kinds", "twins"]):
        res = runner.invoke(cli, args)
        assert res.exit_code != 0 and res.stderr.startswith("error: ") and len(res.stderr.splitlines()) == 1


@pytest.mark.slow
def test_the_faiss_backend_finds_the_same_groups(corpus, runner, cli, tmp_path):
    root, _ = corpus
    _index(runner, cli, root / "img", tmp_path / "f.clipdex", backend="faiss")
    lance, _ = _groups(runner, cli, root / "ix.clipdex")
    faiss, _ = _groups(runner, cli, tmp_path / "f.clipdex")
    names = lambda gs: sorted(sorted(Path(m["path"]).name for m in g["members"]) for g in gs)  # noqa: E731
    assert names(faiss) == names(lance) and len(lance) >= 3


@pytest.mark.slow
def test_videos_a_clip_is_contained_with_its_range_and_shared_openings_are_not_duplicates(runner, cli, tmp_path):
    pytest.importorskip("av")
    from clipdex.synthetic.dedup_video import make_dedup_videos

    videos = make_dedup_videos(tmp_path / "v")
    res = runner.invoke(cli, ["index", "videos", str(tmp_path / "v"), "--index", str(tmp_path / "ix"),
                              "--model", "clipdex-tiny", "--workers", "0", "--fps", "1"])
    assert res.exit_code == 0, res.output
    groups, _ = _groups(runner, cli, tmp_path / "ix", "--table", "videos")
    assert len(groups) == 1
    names = sorted(Path(m["path"]).name for m in groups[0]["members"])
    assert names == ["a-clip.mp4", "a-copy.mkv", "a.mp4"]
    ids = {Path(m["path"]).name: m["id"] for m in groups[0]["members"]}
    pairs = {frozenset((p["a"], p["b"])): p for p in groups[0]["pairs"]}
    assert pairs[frozenset((ids["a.mp4"], ids["a-copy.mkv"]))]["kind"] == "near"
    inside = pairs[frozenset((ids["a.mp4"], ids["a-clip.mp4"]))]
    assert inside["kind"] == "contained" and inside["contained"]["in"] == ids["a.mp4"]
    assert inside["contained"]["start"] == pytest.approx(4.0, abs=1.0) and inside["contained"]["end"] >= 7.0
    assert all(v["role"] != "opening" or Path(v["path"]).name not in names for v in videos)

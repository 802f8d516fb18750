"""The CLI end to end (CliRunner): index, search, info, models, demo, and every bad input -> one line, exit != 0."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipdex.synthetic import make_bad_files
from tests.helpers import kill_at_commit


def invoke(runner, cli, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def indexed(tmp_path, shapes_copy, runner, cli):
    make_bad_files(shapes_copy / "bad")
    idx = tmp_path / "photos.clipdex"
    r = invoke(runner, cli, "index", "images", shapes_copy, "--index", idx, "--model", "clipdex-tiny", "--workers", 0)
    assert r.exit_code == 0, r.output
    return idx, shapes_copy, r


def snapshot(idx: Path) -> dict:
    """Every file of an index with its size and mtime (the lock file aside)."""
    return {str(p.relative_to(idx)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in idx.rglob("*") if p.is_file() and p.name != ".lock"}


def test_index_prints_a_summary(indexed):
    _, _, r = indexed
    assert r.stdout.startswith("added 48, updated 0, reused 0, unchanged 0, removed 0, errors 3")


def test_search_text_and_image_as_table_and_json(indexed, runner, cli):
    idx, photos, _ = indexed
    r = invoke(runner, cli, "search", idx, "a red circle", "-k", 3)
    lines = r.stdout.splitlines()
    assert r.exit_code == 0 and lines[0].split()[:3] == ["rank", "score", "id"] and len(lines) == 4
    probe = photos / "square" / "green_1.png"
    r = invoke(runner, cli, "search", idx, "--image", probe, "-k", 5, "--json")
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0]["path"] == str(probe) and hits[0]["score"] > 0.9999
    assert all("vector" not in h and "text_vector" not in h for h in hits)
    assert hits == sorted(hits, key=lambda h: -h["score"])


def test_search_where_and_min_score(indexed, runner, cli):
    idx, photos, _ = indexed
    probe = photos / "square" / "green_1.png"
    r = invoke(runner, cli, "search", idx, "--image", probe, "-k", 50, "--where", "path LIKE '%/circle/%'", "--json")
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(hits) == 12 and all("/circle/" in h["path"] for h in hits)
    r = invoke(runner, cli, "search", idx, "--image", probe, "-k", 50, "--min-score", 0.999, "--json")
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert hits and all(h["score"] >= 0.999 for h in hits) and len(hits) < 48


def test_info_shows_tables_counts_and_errors(indexed, runner, cli):
    idx, _, _ = indexed
    data = json.loads(invoke(runner, cli, "info", idx, "--json").stdout)
    assert data["model"] == "clipdex-tiny" and data["tables"]["images"]["rows"] == 48
    assert data["errors"] == {"read": 1, "decode": 2} and data["size_bytes"] > 0
    text = invoke(runner, cli, "info", idx).stdout
    assert "images: 48 rows" in text and "decode: 2" in text


def test_models_lists_tiny_and_the_default(runner, cli):
    rows = [json.loads(line) for line in invoke(runner, cli, "models", "--json").stdout.splitlines()]
    specs = {r["spec"]: r for r in rows}
    assert specs["clipdex-tiny"]["cached"] and "ViT-B-32:laion2b_s34b_b79k" in specs


BAD_INPUTS = [
    (["search", "{tmp}/nope.clipdex", "x"], "does not exist"),
    (["search", "{idx}", "x", "--where", "colour = 'red'"], "bad --where"),
    (["search", "{idx}", "--image", "{photos}/bad/notes.jpg"], "not an image"),
    (["search", "{idx}", "--image", "{tmp}/missing.png"], "query image"),
    (["search", "{idx}"], "give a text query or --image"),
    (["search", "{idx}", "x", "--model", "ViT-B-32:openai"], "built with clipdex-tiny"),
    (["search", "{idx}", "x", "--table", "videos"], "no table 'videos'"),
    (["search", "{idx}", "x", "--table", "errors"], "no vector column"),
    (["index", "images", "{tmp}/nowhere", "--index", "{idx}"], "source not found"),
    (["index", "images", "{tmp}/emptydir", "--index", "{idx}"], "no files to index"),
    (["index", "images", "{photos}", "--index", "{idx}", "--model", "ViT-B-32:openai"], "built with clipdex-tiny"),
    (["index", "images", "{photos}", "--index", "{tmp}/new.clipdex", "--model", "Vit-B-32"], "unknown model"),
    (["index", "images", "{photos}", "--index", "{tmp}/new.clipdex"], "not in the local cache"),
    (["info", "{photos}"], "not a clipdex index"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_one_line_and_leaves_the_index_alone(indexed, runner, cli, tmp_path, args, message):
    idx, photos, _ = indexed
    (tmp_path / "emptydir").mkdir(exist_ok=True)
    before = snapshot(idx)
    args = [a.format(tmp=tmp_path, idx=idx, photos=photos) for a in args]
    r = runner.invoke(cli, args)
    assert r.exit_code != 0
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(("error: ", "Error: ")) and message in err[0], r.stderr
    assert "Traceback" not in r.output
    assert snapshot(idx) == before
    assert not (tmp_path / "new.clipdex").exists()


def test_demo_runs_offline_on_the_tiny_model(tmp_path, runner, cli):
    r = invoke(runner, cli, "demo", "--out", tmp_path / "demo", "-k", 3)
    assert r.exit_code == 0
    assert "not available here" in r.stderr and "clipdex-tiny" in r.stderr
    assert r.stdout.count('"a red circle"') == 1 and "--image" in r.stdout
    image_block = r.stdout.split("--image", 1)[1].splitlines()
    probe = r.stdout.split("--image ", 1)[1].split()[0]
    first = image_block[2].split()
    assert first[:2] == ["1", "1.0000"] and probe.endswith(first[2].lstrip("…"))
    again = invoke(runner, cli, "demo", "--out", tmp_path / "demo", "-k", 3)
    assert "0 new, 48 unchanged" in again.stdout


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["lance", "faiss"])
@pytest.mark.parametrize("when", ["before", "after"])
def test_kill_minus_nine_then_resume_gives_every_image_exactly_once(tmp_path, backend, when):
    """A real indexing process killed at its third commit; the re-run completes the index with no duplicates or
    losses."""
    from clipdex.synthetic import make_shapes
    from retrieval.index.directory import open_index

    photos = tmp_path / "many"
    make_shapes(photos, per_pair=16, size=64, seed=3)  # 384 images
    make_bad_files(photos / "bad")
    idx = tmp_path / "resume.clipdex"
    args = ["index", "images", str(photos), "--index", str(idx), "--model", "clipdex-tiny", "--backend", backend,
            "--workers", "0", "--batch-size", "2", "--commit-every", "4"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "KILL_AT": "3", "KILL_WHEN": when,
           "KILL_LOG": str(tmp_path / "landed")}
    killed = subprocess.run([sys.executable, "-c", kill_at_commit(), *args], env=env, capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    with open_index(idx) as ix:
        killed_at = ix.store.count("images")
    assert 0 < killed_at == int((tmp_path / "landed").read_text()) < 384  # each commit all or nothing
    cmd = [sys.executable, "-m", "cli.main", *args]
    done = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    ix = open_index(idx)
    import pyarrow as pa

    paths = pa.Table.from_batches(list(ix.store.scan("images", ["path"]))).column("path").to_pylist()
    assert len(paths) == 384 and len(set(paths)) == 384
    assert summary["unchanged"] >= killed_at and summary["added"] + summary["unchanged"] == 384
    assert ix.store.count("errors") == 3

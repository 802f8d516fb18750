"""Webdataset / img2dataset shards as a source for ``clipdex index images`` (the local engine)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from clipdex.synthetic.shards import make_bad_shards, make_shards
from indexers.images import ImageIndexOptions
from indexers.shards import index_shards
from retrieval.errors import InvalidInput
from retrieval.index.directory import create_index, open_index
from retrieval.io import shards as shard_io
from retrieval.io.shards import discover_shards, expand_braces, is_shard_source, read_shard, split_key
from tests.helpers import kill_at_commit

TINY = "clipdex-tiny"
OPTS = ImageIndexOptions(workers=0, batch_size=8, optimize=False)


def table(ix, name, columns=None) -> pa.Table:
    return pa.Table.from_batches(list(ix.store.scan(name, columns)))


def test_brace_patterns_expand_ranges_with_their_padding_and_lists():
    assert expand_braces("s/{008..011}.tar") == ["s/008.tar", "s/009.tar", "s/010.tar", "s/011.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    with pytest.raises(InvalidInput):
        expand_braces("s/{9..1}.tar")


def test_a_folder_whose_name_has_braces_is_a_folder_not_a_pattern(tmp_path):
    folder = tmp_path / "photos {2020}"
    folder.mkdir()
    assert not is_shard_source(folder)
    make_shards(tmp_path / "s {1}", n_shards=1, per_shard=1, failed_per_shard=0)
    assert is_shard_source(tmp_path / "s {1}")  # a folder of tars, found as such
    assert [Path(s.path).name for s in discover_shards([str(tmp_path / "s {1}")]).shards] == ["00000.tar"]


def test_keys_follow_the_webdataset_rule_up_to_the_first_dot_of_the_file_name():
    assert split_key("a.b/dir/0001.seg.JPG") == ("a.b/dir/0001", "seg.jpg")
    assert split_key("0002.txt") == ("0002", "txt")


def test_an_img2dataset_folder_indexes_every_sample_once_with_captions_metadata_and_failed_downloads(tmp_path):
    make_shards(tmp_path / "shards", n_shards=2, per_shard=6, failed_per_shard=2)
    found = discover_shards([str(tmp_path / "shards" / "{00000..00001}.tar")])
    with create_index(tmp_path / "ix", model=TINY) as ix:
        s = index_shards(ix, found, OPTS)
        rows = table(ix, "images", ["path", "shard", "key", "caption", "url", "shape", "exif_make", "text_vector"])
        errors = table(ix, "errors", ["path", "stage", "reason"])
    assert (s.added, s.errors, s.shards) == (12, 4, 2)
    assert sorted(rows.column("path").to_pylist()) == sorted(
        f"{sh}#{k}" for sh, k in zip(rows.column("shard").to_pylist(), rows.column("key").to_pylist()))
    first = rows.filter(pa.compute.equal(rows.column("key"), "000000000")).to_pylist()[0]
    assert first["caption"].startswith("a ") and first["url"] == "https://example.com/000000000.jpg"
    assert first["caption"].split()[-1] == first["shape"] and first["exif_make"] == "clipdex"
    assert first["text_vector"] is not None  # the caption is embedded too
    assert sorted(errors.column("stage").to_pylist()) == ["download"] * 4
    assert all("404" in r for r in errors.column("reason").to_pylist())
    assert errors.column("path").to_pylist()[0].endswith(".tar#000000006")


def test_a_rerun_skips_whole_shards_by_path_size_and_mtime_and_reads_a_changed_one_again(tmp_path, monkeypatch):
    paths = make_shards(tmp_path / "shards", n_shards=2, per_shard=5, failed_per_shard=1)
    with create_index(tmp_path / "ix", model=TINY) as ix:
        index_shards(ix, discover_shards([str(tmp_path / "shards")]), OPTS)
    opened = []
    real = shard_io.read_shard
    monkeypatch.setattr("indexers.shards.read_shard", lambda sh: opened.append(sh.path) or real(sh))
    os.utime(paths[1], (1_800_000_000, 1_800_000_000))  # the second shard "changed"
    with open_index(tmp_path / "ix", writable=True) as ix:
        s = index_shards(ix, discover_shards([str(tmp_path / "shards")]), OPTS)
        rows = table(ix, "images", ["path", "mtime"])
        done = table(ix, "shards", ["path", "mtime", "samples", "errors"]).to_pylist()
    assert opened == [str(paths[1])]  # the unchanged shard was never opened
    assert (s.shards_unchanged, s.unchanged, s.known_errors, s.updated, s.added) == (1, 5, 1, 5, 0)
    assert rows.num_rows == 10 and len(set(rows.column("path").to_pylist())) == 10  # replaced, not added
    assert sorted((d["path"], d["samples"], d["errors"]) for d in done) == [(str(p), 6, 1) for p in paths]
    assert {d["mtime"] for d in done if d["path"] == str(paths[1])} == {1_800_000_000}


def test_broken_shards_are_recorded_and_never_stop_the_run(tmp_path):
    bad = make_bad_shards(tmp_path / "bad")
    make_shards(tmp_path / "bad", n_shards=1, per_shard=4, failed_per_shard=0)
    with create_index(tmp_path / "ix", model=TINY) as ix:
        s = index_shards(ix, discover_shards([str(tmp_path / "bad")]), OPTS)
        errors = {(Path(p).name, st) for p, st in zip(*table(ix, "errors", ["path", "stage"]).to_pydict().values())}
        keys = set(table(ix, "images", ["key"]).column("key").to_pylist())
    # truncated: 3 samples before the cut; not_image: 5 of 6; bad_json: 5 of 6; not_tar: none; the good shard: 4
    assert s.added == 3 + 5 + 5 + 4 and s.bad_shards == 2
    assert errors == {("truncated.tar", "read"), ("not_tar.tar", "read"), ("not_image.tar#n0001", "decode"),
                      ("bad_json.tar#j0002", "read")}
    assert {"t0000", "t0002", "n0000", "j0005"} <= keys and "n0001" not in keys and "t0003" not in keys
    with pytest.raises(shard_io.ShardError):
        list(read_shard(discover_shards([str(bad["not_tar"])]).shards[0]))


def test_shards_and_image_folders_in_one_run_are_refused_in_one_line(tmp_path, runner, cli, shapes_dir):
    make_shards(tmp_path / "shards", n_shards=1, per_shard=2, failed_per_shard=0)
    r = runner.invoke(cli, ["index", "images", str(tmp_path / "shards"), str(shapes_dir), "--index",
                            str(tmp_path / "ix"), "--model", TINY])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "separate runs" in r.output
    assert not (tmp_path / "ix").exists()


def test_engine_ray_without_the_extra_is_one_line_naming_it(tmp_path, runner, cli, monkeypatch):
    make_shards(tmp_path / "shards", n_shards=1, per_shard=2, failed_per_shard=0)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: importing it fails
    r = runner.invoke(cli, ["index", "images", str(tmp_path / "shards"), "--index", str(tmp_path / "ix"),
                            "--model", TINY, "--engine", "ray"])
    assert r.exit_code == 1 and r.output == "error: --engine ray needs Ray Data: pip install 'clipdex[ray]'\n"
    assert not (tmp_path / "ix").exists()




@pytest.mark.slow
def test_kill_minus_nine_mid_shard_then_rerun_gives_every_sample_exactly_once(tmp_path):
    make_shards(tmp_path / "shards", n_shards=3, per_shard=12, failed_per_shard=2)
    idx = tmp_path / "ix"
    args = ["index", "images", str(tmp_path / "shards" / "{00000..00002}.tar"), "--index", str(idx), "--model",
            TINY, "--workers", "0", "--batch-size", "4", "--commit-every", "4"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "KILL_AT": "5"}
    killed = subprocess.run([sys.executable, "-c", kill_at_commit(), *args], env=env, capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    with open_index(idx) as ix:
        assert 0 < ix.store.count("images") < 36 and ix.store.count("shards") == 1  # killed inside shard 2
    done = subprocess.run([sys.executable, "-m", "cli.main", *args, "--json"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    s = json.loads(done.stdout)
    with open_index(idx) as ix:
        paths = table(ix, "images", ["path"]).column("path").to_pylist()
        errs = table(ix, "errors", ["path"]).column("path").to_pylist()
        assert ix.store.count("shards") == 3
    assert len(paths) == len(set(paths)) == 36 and len(errs) == len(set(errs)) == 6
    assert s["shards_unchanged"] == 1 and s["added"] + s["unchanged"] == 36

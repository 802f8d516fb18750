"""Webdataset / img2dataset shards as a source for ``clipdex index images`` (the local engine)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from clipdex.synthetic.shards import make_bad_shards, make_hostile_shards, make_shards
from indexers.images import ImageIndexOptions
from indexers.shards import index_shards
from retrieval.errors import InvalidInput
from retrieval.index.directory import create_index, open_index
from retrieval.io import shards as shard_io
from retrieval.io.braces import count_braces, expand_braces, iter_braces
from retrieval.io.shard_meta import json_depth
from retrieval.io.shards import discover_shards, is_shard_source, read_shard, split_key
from tests.helpers import kill_at_commit

TINY = "clipdex-tiny"
OPTS = ImageIndexOptions(workers=0, batch_size=8, optimize=False)


def table(ix, name, columns=None) -> pa.Table:
    return pa.Table.from_batches(list(ix.store.scan(name, columns)))


def test_brace_patterns_expand_ranges_with_their_padding_and_lists():
    assert expand_braces("s/{008..011}.tar") == ["s/008.tar", "s/009.tar", "s/010.tar", "s/011.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    for bad in ("s/{9..1}.tar", "s/{a,{1..2}}.tar", "s/{1}.tar", "s/{000..999}}.tar"):
        with pytest.raises(InvalidInput):
            expand_braces(bad)


def test_a_pattern_naming_more_than_the_bound_is_refused_before_any_name_is_made():
    assert count_braces("x/{000000..999999999}-{a,b}.tar") == 2_000_000_000
    names = iter_braces("s/{0..2}{x,y}")
    assert next(names) == "s/0x" and list(names) == ["s/0y", "s/1x", "s/1y", "s/2x", "s/2y"]
    with pytest.raises(InvalidInput, match="names 2,000,000,000 shards; at most 1,000,000"):
        iter_braces("x/{000000..999999999}-{a,b}.tar")  # raised by the call: no name was made


@pytest.mark.parametrize("limit_gib", [8])
def test_index_images_with_a_billion_shard_pattern_is_one_line_error_at_once_in_bounded_memory(tmp_path, limit_gib):
    """The command of issue 19 (item 7): it expanded every name first (MemoryError, or a Rust allocation failure
    once the missing shards were committed one by one). Run under an address-space limit so a regression fails
    here instead of taking the machine's memory."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_gib << 30, limit_gib << 30))

    pattern = str(tmp_path / "x" / "{000000..999999999}.tar")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "cli.main", "index", "images", pattern, "--index", str(tmp_path / "ix"),
                        "--model", TINY], env=env, capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert r.returncode == 1 and r.stdout == "", (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert r.stderr.count("\n") == 1 and "names 1,000,000,000 shards; at most 1,000,000" in r.stderr, r.stderr
    assert not (tmp_path / "ix").exists()


def test_missing_shards_of_a_pattern_are_errors_committed_together_once_and_a_pattern_of_none_is_refused(
        tmp_path, runner, cli):
    make_shards(tmp_path / "s", n_shards=1, per_shard=2, failed_per_shard=0)
    pattern = str(tmp_path / "s" / "{00000..00299}.tar")  # one shard there, 299 missing
    first = run_cli(runner, cli, pattern, tmp_path / "ix")
    with open_index(tmp_path / "ix") as ix:
        versions = ix.store.version("errors")
        errors = table(ix, "errors", ["path", "reason"]).to_pylist()
    assert (first["added"], first["errors"]) == (2, 299)
    assert len(errors) == 299 and {e["reason"] for e in errors} == {"shard not found"}
    assert versions <= 3  # created, then one commit for the 299 rows (it was a commit per missing shard)
    again = run_cli(runner, cli, pattern, tmp_path / "ix")
    with open_index(tmp_path / "ix") as ix:
        assert ix.store.version("errors") == versions and ix.store.count("errors") == 299  # recorded once
    assert (again["errors"], again["known_errors"], again["shards_unchanged"]) == (0, 299, 1)
    r = runner.invoke(cli, ["index", "images", str(tmp_path / "none" / "{000..099}.tar"), "--index",
                            str(tmp_path / "ix2"), "--model", TINY])
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert "no shard named by" in r.output and "(100 names looked for)" in r.output


def run_cli(runner, cli, src, ix, *extra) -> dict:
    """``clipdex index images SRC --index IX --json`` (no worker processes): its summary; the run must succeed."""
    r = runner.invoke(cli, ["index", "images", str(src), "--index", str(ix), "--model", TINY, "--workers", "0",
                            "--json", *extra])
    assert r.exit_code == 0, r.output[-2000:]
    return json.loads(r.output.strip().splitlines()[-1])


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


def test_a_key_repeated_in_a_shard_is_one_row_with_its_first_samples_caption_and_each_repeat_an_error(
        tmp_path, runner, cli):
    bad = make_hostile_shards(tmp_path / "s")  # d0001 again after d0002, d0003 twice in a row
    first = run_cli(runner, cli, bad["duplicates"], tmp_path / "ix")
    with open_index(tmp_path / "ix") as ix:
        rows = table(ix, "images", ["key", "caption"]).to_pylist()
        errors = table(ix, "errors", ["path", "stage", "reason"]).to_pylist()
    assert sorted((r["key"], r["caption"]) for r in rows) == [(k, f"{k} first") for k in ("d0000", "d0001", "d0002",
                                                                                           "d0003")]
    assert sorted(e["path"].rsplit("#", 1)[1] for e in errors) == ["d0001.dup2", "d0003.dup2"]
    assert all(e["stage"] == "read" and "duplicate key" in e["reason"] and "only the first one is read" in e["reason"]
               for e in errors)
    assert (first["added"], first["errors"]) == (4, 2)
    with open_index(tmp_path / "ix", writable=True) as ix:  # as after a kill: the shard read again, sample by sample
        ix.delete("shards", table(ix, "shards", ["id"]).column("id").to_pylist())
    again = run_cli(runner, cli, bad["duplicates"], tmp_path / "ix")
    with open_index(tmp_path / "ix") as ix:
        assert (ix.store.count("images"), ix.store.count("errors"), ix.store.count("shards")) == (4, 2, 1)
    assert (again["added"], again["unchanged"], again["errors"], again["known_errors"]) == (0, 4, 0, 2)


@pytest.mark.parametrize("backend", ["lance", "faiss"])
def test_json_keys_a_store_cannot_take_are_renamed_or_left_out_per_sample_and_the_table_stays_readable(
        tmp_path, runner, cli, backend):
    bad = make_hostile_shards(tmp_path / "s")  # b0000's json: a backquote, a dot, a space, _rowid, Path
    ix_dir = tmp_path / "ix"
    first = run_cli(runner, cli, bad["bad_keys"], ix_dir, "--backend", backend)
    make_shards(tmp_path / "later", n_shards=1, per_shard=2, failed_per_shard=0)
    later = run_cli(runner, cli, tmp_path / "later", ix_dir)  # later runs into the same index still work
    with open_index(ix_dir) as ix:
        rows = {r["key"]: r for r in table(ix, "images").to_pylist()}
        errors = table(ix, "errors", ["path", "stage", "reason"]).to_pylist()
    assert (first["added"], first["errors"], first["metadata_dropped"], later["added"]) == (2, 0, 1, 2)
    b0 = rows["b0000"]
    assert (b0["we_ird"], b0["a_b"], b0["EXIF_Make"], b0["ok"], rows["b0001"]["ok"]) == ("tick", "dot", "space",
                                                                                         "fine", "plain")
    assert b0["path"].endswith("bad_keys.tar#b0000") and not {"we`ird", "a.b", "EXIF Make", "_rowid", "Path"} & set(b0)
    assert rows["000000000"]["shape"] and rows["000000000"]["we_ird"] is None
    [note] = errors
    assert note["path"].endswith("bad_keys.tar#b0000.json") and note["stage"] == "metadata"
    assert "'_rowid': starts with _" in note["reason"] and "'Path': a built-in column" in note["reason"]
    if backend == "lance":  # readable by lancedb itself, not only through clipdex
        import lancedb  # the lance backend's own reader (a dependency of the default backend)

        images = lancedb.connect(str(ix_dir / "lance")).open_table("images").to_arrow()
        assert images.num_rows == 4 and {"we_ird", "a_b", "EXIF_Make", "ok"} <= set(images.column_names)
    r = runner.invoke(cli, ["search", str(ix_dir), "a shape", "--where", "EXIF_Make = 'space'", "--json"])
    assert r.exit_code == 0 and [json.loads(line)["path"] for line in r.output.splitlines()] == [b0["path"]], r.output
    r = runner.invoke(cli, ["index", "images", str(bad["bad_keys"]), "--index", str(tmp_path / "ix2"), "--model", TINY,
                            "--workers", "0", "--backend", backend])
    assert r.exit_code == 0 and "1 samples with json keys left out (see errors)" in r.output, r.output


def test_a_json_member_too_deep_or_too_big_is_its_samples_error_and_the_shards_other_samples_are_indexed(
        tmp_path, runner, cli):
    bad = make_hostile_shards(tmp_path / "s")  # e0001's json nested 100,000 deep, e0003's 1.2 MB
    s = run_cli(runner, cli, bad["deep_json"], tmp_path / "ix")
    with open_index(tmp_path / "ix") as ix:
        keys = sorted(table(ix, "images", ["key"]).column("key").to_pylist())
        errors = {e["path"].rsplit("#", 1)[1]: (e["stage"], e["reason"]) for e in table(ix, "errors").to_pylist()}
        assert ix.store.count("shards") == 1  # the shard is done: later runs skip it
    assert keys == ["e0000", "e0002", "e0004"] and (s["added"], s["errors"]) == (3, 2)
    assert errors["e0001"] == ("read", "metadata json is nested 100000 levels deep, over the limit of 32")
    assert errors["e0003"][0] == "read" and "bytes, over the limit of 1,048,576" in errors["e0003"][1]


def test_json_depth_counts_objects_and_arrays_outside_strings():
    cases = {b"1": 0, b"{}": 1, b'{"a": [1, {"b": []}]}': 4, b'{"s": "[[{{"}': 1, b'["\\\\", ["\\"]"]]': 2,
             b"[" * 5000 + b"]" * 5000: 5000}
    for text, depth in cases.items():
        assert json_depth(text) == depth, text
    for text in list(cases)[:-1]:  # the oracle: the parsed value's depth
        assert json_depth(text) == _depth(json.loads(text))


def _depth(value) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    return 0 if children is None else 1 + max(map(_depth, children), default=0)


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

"""The CLI under bad input and failures: every error is one line `error: ...` with exit status 1 (option errors
included), out-of-range scores and k are refused, `--json` is JSON lines everywhere, and an unexpected exception
shows its traceback only when asked (--debug, CLIPDEX_DEBUG=1). Failures are injected by monkeypatching the
library call a command makes, so every case is deterministic."""
import errno
import json
import shutil

import pytest

from retrieval.errors import IndexFormatError


@pytest.fixture
def indexed(tmp_path, shapes_copy, runner, cli):
    idx = tmp_path / "photos.clipdex"
    r = runner.invoke(cli, ["index", "images", str(shapes_copy), "--index", str(idx), "--model", "clipdex-tiny",
                            "--workers", "0"])
    assert r.exit_code == 0, r.output
    return idx, shapes_copy


def one_error_line(r) -> str:
    """The single stderr line of a failed run (asserting there is exactly one, and no traceback)."""
    assert r.exit_code == 1, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output and "Usage:" not in r.output
    return lines[0]


OPTION_ERRORS = [
    (["search", "{idx}", "x", "-k", "0"], "0 is not in the range"),
    (["search", "{idx}", "x", "-k", "-1"], "-1 is not in the range"),
    (["search", "{idx}", "x", "-k", "1000000000"], "1000000000 is not in the range"),
    (["search", "{idx}", "x", "--min-score", "abc"], "'abc' is not a number"),
    (["search", "{idx}", "x", "--min-score", "5"], "not a cosine score in [-1, 1]"),
    (["search", "{idx}", "x", "--min-score", "-5"], "not a cosine score in [-1, 1]"),
    (["search", "{idx}", "x", "--min-score", "nan"], "not a cosine score in [-1, 1]"),
    (["search", "{idx}", "--image", "{photos}"], "is a directory"),
    (["index", "images", "{photos}", "--index", "{idx}", "--batch-size", "0"], "0 is not in the range"),
    (["index", "images", "{photos}", "--index", "{idx}", "--commit-every", "0"], "0 is not in the range"),
    (["index", "texts", "{photos}", "--index", "{idx}", "--batch-size", "0"], "0 is not in the range"),
    (["search", "{idx}", "x", "--no-such-option"], "No such option"),
    (["serach", "{idx}", "x"], "No such command"),
    (["classify", "{photos}", "--classes", "{photos}/c.txt", "--method", "nope"], "unknown method 'nope'"),
]


@pytest.mark.parametrize("args, message", OPTION_ERRORS, ids=[" ".join(a) for a, _ in OPTION_ERRORS])
def test_option_errors_are_one_line_with_exit_status_1(indexed, runner, cli, args, message):
    idx, photos = indexed
    r = runner.invoke(cli, [a.format(idx=idx, photos=photos) for a in args])
    line = one_error_line(r)
    assert message in line, line
    assert "--help" in line  # where to look for the right spelling


def test_scores_at_the_bounds_are_accepted(indexed, runner, cli):
    idx, photos = indexed
    probe = str(photos / "square" / "green_1.png")
    for bound in ("-1", "1", "1.0"):
        r = runner.invoke(cli, ["search", str(idx), "--image", probe, "--min-score", bound, "--json"])
        assert r.exit_code == 0, r.output
        assert all(json.loads(line)["score"] >= float(bound) - 1e-6 for line in r.stdout.splitlines())


def test_json_output_is_one_compact_object_per_line_for_every_command(indexed, runner, cli, tmp_path):
    idx, photos = indexed
    runs = {
        "index": ["index", "images", str(photos), "--index", str(idx), "--json"],
        "info": ["info", str(idx), "--json"],
        "models": ["models", "--json"],
        "optimize": ["optimize", str(idx), "--json"],
        "search": ["search", str(idx), "a red circle", "-k", "3", "--json"],
    }
    for name, args in runs.items():
        r = runner.invoke(cli, args)
        assert r.exit_code == 0, (name, r.output)
        lines = r.stdout.splitlines()
        assert lines, name
        for line in lines:
            obj = json.loads(line)
            assert isinstance(obj, dict) and json.dumps(obj, ensure_ascii=False, separators=(",", ":")) == line
        if name in ("index", "info", "optimize"):
            assert len(lines) == 1, (name, r.stdout)
    assert json.loads(runner.invoke(cli, runs["info"]).stdout)["tables"]["images"]["rows"] == 48


def test_a_library_error_with_a_multi_line_message_is_printed_on_one_line(indexed, runner, cli, monkeypatch):
    idx, _ = indexed

    def broken(path, writable=False):
        raise IndexFormatError(f"{path}/clipdex.json is unreadable:\nExpecting value: line 1 column 1")

    monkeypatch.setattr("cli.info_cmd.open_index", broken)
    line = one_error_line(runner.invoke(cli, ["info", str(idx)]))
    assert line == f"error: {idx}/clipdex.json is unreadable: Expecting value: line 1 column 1"


def test_an_io_error_is_one_line_and_says_what_failed(indexed, runner, cli, monkeypatch):
    idx, _ = indexed

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(idx / "lance"))

    monkeypatch.setattr("cli.info_cmd.open_index", full_disk)
    line = one_error_line(runner.invoke(cli, ["info", str(idx)]))
    assert "No space left on device" in line and str(idx) in line


def _bug(*args, **kwargs):
    raise RuntimeError("boom\nsecond line")


def test_an_unexpected_exception_is_one_honest_line_without_debug(indexed, runner, cli, monkeypatch):
    idx, _ = indexed
    monkeypatch.delenv("CLIPDEX_DEBUG", raising=False)
    monkeypatch.setattr("cli.info_cmd.open_index", _bug)
    line = one_error_line(runner.invoke(cli, ["info", str(idx)]))
    assert line.startswith("error: unexpected RuntimeError: boom second line") and "report it" in line
    assert "--debug" in line and "CLIPDEX_DEBUG=1" in line


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback_of_an_unexpected_exception(indexed, runner, cli, monkeypatch, how):
    idx, _ = indexed
    monkeypatch.setattr("cli.info_cmd.open_index", _bug)
    if how == "env":
        monkeypatch.setenv("CLIPDEX_DEBUG", "1")
        args = ["info", str(idx)]
    else:
        monkeypatch.delenv("CLIPDEX_DEBUG", raising=False)
        args = ["--debug", "info", str(idx)]
    r = runner.invoke(cli, args)
    assert r.exit_code == 1 and isinstance(r.exception, RuntimeError) and str(r.exception) == "boom\nsecond line"
    assert "error: unexpected" not in r.stderr


def test_a_library_error_stays_one_line_even_with_debug(indexed, runner, cli):
    idx, _ = indexed
    line = one_error_line(runner.invoke(cli, ["--debug", "search", str(idx), "x", "--table", "nope"]))
    assert "nope" in line


def test_help_and_version_still_exit_0(runner, cli):
    for args in (["--help"], ["--version"], ["index", "--help"], ["search", "-h"]):
        r = runner.invoke(cli, args)
        assert r.exit_code == 0 and r.stdout and not r.stderr, (args, r.output)
    r = runner.invoke(cli, [])
    assert "Usage:" in r.output and "search" in r.output


def test_every_index_command_takes_the_shared_options(runner, cli):
    shared = ("--index", "--model", "--backend", "--batch-size", "--exclude", "--prune", "--retry-errors",
              "--device", "--json")
    for sub in ("images", "texts", "videos"):
        text = runner.invoke(cli, ["index", sub, "--help"]).stdout
        assert all(opt in text for opt in shared), (sub, text)


def _edit_manifest(change):
    def damage(idx):
        manifest = json.loads((idx / "clipdex.json").read_text())
        (idx / "clipdex.json").write_text(json.dumps(change(manifest)))
    return damage


DAMAGE = {
    "manifest not UTF-8": lambda idx: (idx / "clipdex.json").write_bytes(b"\xff\xfe\x00garbage"),
    "manifest a JSON array": lambda idx: (idx / "clipdex.json").write_text("[1, 2]"),
    "manifest without model": _edit_manifest(lambda m: {k: v for k, v in m.items() if k != "model"}),
    "manifest dim not a number": _edit_manifest(lambda m: {**m, "dim": "abc"}),
    "manifest tables a list": _edit_manifest(lambda m: {**m, "tables": []}),
    "lance versions removed": lambda idx: [shutil.rmtree(d) for d in idx.rglob("_versions")],
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_index_gives_one_error_line_and_is_left_as_it_was(indexed, runner, cli, damage):
    idx, _ = indexed
    DAMAGE[damage](idx)
    before = {str(p): p.read_bytes() for p in idx.rglob("*") if p.is_file() and p.name != ".lock"}
    for args in (["search", str(idx), "a red circle"], ["info", str(idx)]):
        one_error_line(runner.invoke(cli, args))
    assert {str(p): p.read_bytes() for p in idx.rglob("*") if p.is_file() and p.name != ".lock"} == before

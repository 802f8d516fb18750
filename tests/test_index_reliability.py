"""The index directory under damage (issue 14 #6, #11; issue 9's lock error): a stale lock left by a killed
creation, broken manifests and missing or truncated store files each give one clear line and change nothing."""
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clipdex.synthetic.embeddings import unit_vectors
from retrieval.errors import ClipdexError, IndexExists, IndexFormatError, IndexLocked
from retrieval.index.directory import MANIFEST, create_index, open_index
from retrieval.store.faiss import FaissStore

ROOT = Path(__file__).resolve().parents[1]


def build(path: Path, backend: str) -> Path:
    with create_index(path, dim=8, model="none", backend=backend) as ix:
        for i in range(2):  # two commits: two Parquet parts / two Lance fragments
            ix.add_vectors("images", unit_vectors(i, 10, 8), {"path": [f"p{i}-{j}" for j in range(10)]})
    return path


def snapshot(path: Path) -> dict:
    """Every file's digest and every folder, relative to ``path``."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


def assert_one_line(exc: BaseException, *fragments: str) -> None:
    msg = str(exc)
    assert "\n" not in msg and len(msg) < 500, msg
    for f in fragments:
        assert f in msg, msg


# -- issue 9: "locked" is its own error ------------------------------------------------------------------------------
def test_a_held_lock_is_index_locked_not_index_exists(tmp_path):
    ix = create_index(tmp_path / "a", dim=8, model="none")
    with pytest.raises(IndexLocked, match="being written by another process") as err:
        open_index(tmp_path / "a", writable=True)
    assert not isinstance(err.value, IndexExists) and isinstance(err.value, ClipdexError)
    ix.close()
    open_index(tmp_path / "a", writable=True).close()


# -- issue 14 #6: a folder left with only the lock of a killed creation ---------------------------------------------
@pytest.mark.parametrize("backend", ["lance", "faiss"])
@pytest.mark.parametrize("leftovers", [[".lock"], [".lock", f".{MANIFEST}.ab12cd.tmp"], [".lock", "BACKEND/"]])
def test_a_folder_with_only_a_stale_lock_is_an_index_to_create(tmp_path, backend, leftovers):
    path = tmp_path / "ix"
    path.mkdir()
    for name in leftovers:
        name = name.replace("BACKEND", backend)
        (path / name).mkdir() if name.endswith("/") else (path / name).write_bytes(b"{")
    with create_index(path, dim=8, model="none", backend=backend) as ix:
        ix.add_vectors("images", unit_vectors(0, 3, 8))
    with open_index(path) as ix:
        assert ix.store.count("images") == 3 and ix.backend == backend
    assert not list(path.glob(f".{MANIFEST}.*.tmp"))


KILL_AT_SAVE = """
import os, signal, sys
from retrieval.index import directory
directory.Index.save_manifest = lambda self: os.kill(os.getpid(), signal.SIGKILL)  # the event: first manifest write
directory.create_index(sys.argv[1], dim=8, model="none", backend=sys.argv[2])
"""


@pytest.mark.parametrize("backend", ["lance", "faiss"])
def test_kill_during_creation_then_rerun_creates_the_index(tmp_path, backend):
    path = tmp_path / "ix"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", KILL_AT_SAVE, str(path), backend], env=env, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    assert (path / ".lock").exists() and not (path / MANIFEST).exists()
    with create_index(path, dim=8, model="none", backend=backend) as ix:
        ix.add_vectors("images", unit_vectors(0, 2, 8))
    with open_index(path) as ix:
        assert ix.store.count("images") == 2


def test_a_creation_in_progress_is_locked_not_foreign(tmp_path):
    path = tmp_path / "ix"
    path.mkdir()
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live creator holds the lock
    try:
        with pytest.raises(IndexLocked) as err:
            create_index(path, dim=8, model="none")
        assert_one_line(err.value, str(path), "another process")
        assert sorted(p.name for p in path.iterdir()) == [".lock"]
    finally:
        os.close(fd)


def test_a_folder_with_other_files_is_still_refused(tmp_path):
    path = tmp_path / "ix"
    (path / "lance").mkdir(parents=True)
    (path / ".lock").write_bytes(b"")
    (path / "lance" / "mine.txt").write_text("keep")
    with pytest.raises(IndexExists, match="not a clipdex index"):
        create_index(path, dim=8, model="none")
    assert (path / "lance" / "mine.txt").read_text() == "keep"


# -- issue 14 #11: broken clipdex.json ------------------------------------------------------------------------------
def _edit(**changes):
    def apply(m: dict) -> bytes:
        m = dict(m)
        for k, v in changes.items():
            if v is ...:
                m.pop(k)
            else:
                m[k] = v
        return json.dumps(m).encode()
    return apply


BROKEN_MANIFESTS = [  # (id, new bytes from the good manifest, fragment of the message)
    ("not-utf8", lambda m: json.dumps(m).encode().replace(b'"none"', b'"n\xe9"'), "is not UTF-8"),
    ("invalid-json", lambda m: json.dumps(m).encode()[:-5], "is not valid JSON"),
    ("empty", lambda m: b"", "is not valid JSON"),
    ("array", lambda m: json.dumps([m]).encode(), "holds an array, not a JSON object"),
    ("string", lambda m: b'"clipdex"', "holds a string"),
    ("no-model", _edit(model=...), "has no 'model' field"),
    ("no-dim", _edit(dim=...), "has no 'dim' field"),
    ("no-backend", _edit(backend=...), "has no 'backend' field"),
    ("model-number", _edit(model=5), "model is a number"),
    ("dim-text", _edit(dim="abc"), 'dim is a string ("abc")'),
    ("dim-zero", _edit(dim=0), "not a positive whole number"),
    ("dim-bool", _edit(dim=True), "dim is true/false"),
    ("tables-list", _edit(tables=["images"]), "tables is an array"),
    ("table-info-string", _edit(tables={"images": "lots"}), "tables.images is a string"),
    ("rows-negative", _edit(tables={"images": {"rows": -1}}), "tables.images.rows is -1"),
    ("ann-list", _edit(tables={"images": {"rows": 20, "ann": ["flat"]}}), "tables.images.ann is"),
    ("version-string", _edit(format_version="1"), 'format_version is a string ("1"), not a whole number like 1'),
    ("version-float", _edit(format_version=1.0), "not a whole number"),
    ("version-negative", _edit(format_version=-1), "not a whole number"),
    ("version-newer", _edit(format_version=99), "format version 99 was written by a newer clipdex"),
    ("backend-bogus", _edit(backend="sqlite"), 'unknown backend "sqlite"'),
    ("format-other", _edit(format="other"), 'format is "other"'),
    ("updated-number", _edit(updated=5), "updated is a number"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return {b: build(tmp_path_factory.mktemp(b) / "ix", b) for b in ("lance", "faiss")}


def copy_of(built, backend, tmp_path) -> Path:
    path = tmp_path / "ix"
    shutil.copytree(built[backend], path)
    return path


@pytest.mark.parametrize("backend", ["faiss", "lance"])
@pytest.mark.parametrize("case, damage, why", BROKEN_MANIFESTS, ids=[c[0] for c in BROKEN_MANIFESTS])
def test_a_broken_manifest_is_one_line_and_changes_nothing(built, tmp_path, backend, case, damage, why):
    path = copy_of(built, backend, tmp_path)
    file = path / MANIFEST
    file.write_bytes(damage(json.loads(file.read_text())))
    before = snapshot(path)
    for attempt in (lambda: open_index(path), lambda: open_index(path, writable=True),
                    lambda: create_index(path, dim=8, model="none", backend=backend)):
        with pytest.raises(IndexFormatError) as err:
            attempt()
        assert_one_line(err.value, str(file), why)
        assert ("upgrade clipdex" if case == "version-newer" else "fix it by hand or restore it") in str(err.value)
        assert snapshot(path) == before


def test_a_good_manifest_still_opens_and_old_ones_migrate(built, tmp_path):
    path = copy_of(built, "faiss", tmp_path)
    m = json.loads((path / MANIFEST).read_text())
    (path / MANIFEST).write_text(json.dumps({k: v for k, v in m.items() if k not in ("format_version", "format")}))
    with open_index(path, writable=True) as ix:
        assert ix.store.count("images") == 20 and ix.manifest["tables"]["images"]["ann"]["kind"] == "flat"
    assert json.loads((path / MANIFEST).read_text())["format_version"] == 1


# -- issue 14 #11: missing or truncated store files ----------------------------------------------------------------
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _part(path: Path) -> Path:
    return sorted((path / "faiss" / "images.parquet").glob("*.parquet"))[0]


def _newest_manifest(path: Path) -> Path:
    return min((path / "lance" / "images.lance" / "_versions").glob("*.manifest"), key=lambda p: p.name)


BROKEN_STORES = [
    ("faiss", "part-deleted", lambda p: _part(p).unlink()),
    ("faiss", "part-truncated", lambda p: _truncate(_part(p))),
    ("faiss", "part-emptied", lambda p: _part(p).write_bytes(b"")),
    ("faiss", "state-truncated", lambda p: _truncate(p / "faiss" / "images.state.json")),
    ("faiss", "state-empty-object", lambda p: (p / "faiss" / "images.state.json").write_text("{}")),
    ("faiss", "state-deleted", lambda p: (p / "faiss" / "images.state.json").unlink()),
    ("faiss", "folder-deleted", lambda p: shutil.rmtree(p / "faiss")),
    ("lance", "dataset-deleted", lambda p: shutil.rmtree(p / "lance" / "images.lance")),
    ("lance", "versions-deleted", lambda p: shutil.rmtree(p / "lance" / "images.lance" / "_versions")),
    ("lance", "newest-version-truncated", lambda p: _truncate(_newest_manifest(p))),
    ("lance", "folder-deleted", lambda p: shutil.rmtree(p / "lance")),
]


@pytest.mark.parametrize("backend, case, damage", BROKEN_STORES, ids=[f"{b}-{c}" for b, c, _ in BROKEN_STORES])
def test_a_damaged_store_is_one_line_at_open_and_changes_nothing(built, tmp_path, backend, case, damage):
    path = copy_of(built, backend, tmp_path)
    damage(path)
    before = snapshot(path)
    for writable in (False, True):
        with pytest.raises(IndexFormatError) as err:
            open_index(path, writable=writable)
        assert_one_line(err.value, str(path / backend), "restore")
        assert snapshot(path) == before
    fd = os.open(path / ".lock", os.O_RDWR)  # the failed writable open let go of the lock
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)


def test_a_part_replaced_by_a_concurrent_writer_is_not_called_damage(built, tmp_path, monkeypatch):
    """A reader that lists a part a writer then compacts away looks again instead of reporting damage."""
    path = copy_of(built, "faiss", tmp_path)
    real, calls = FaissStore.count, []

    def count_racing_a_writer(self, name, where=None):  # the event: the first footer read meets a removed part
        calls.append(name)
        if len(calls) == 1:
            raise FileNotFoundError(2, "No such file or directory", "part-000001.parquet")
        return real(self, name, where)

    monkeypatch.setattr(FaissStore, "count", count_racing_a_writer)
    with open_index(path) as ix:
        assert ix.store.count("images") == 20
    assert len(calls) >= 2

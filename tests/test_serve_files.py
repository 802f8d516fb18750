"""Issue 19 #1: /api/file and thumbnails serve only the file that was indexed.

Before, a row's file was checked by size and mtime on the path and then opened again by path: a symbolic link
swapped in for it (to any file of the same size, its mtime forged with ``os.utime``) or a file rewritten in place
with the same size and mtime was served. Now the path is opened without following links and the open file is
checked (regular, size, mtime, content hash) and served."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from clipdex.serve.files import RangeNotSatisfiable, byte_range, open_indexed  # noqa: E402
from clipdex.serve.registry import NotFound  # noqa: E402
from retrieval.index.directory import create_index  # noqa: E402
from tests.serve_helpers import client, served_photos  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory, shapes_dir):
    few = tmp_path_factory.mktemp("few")   # 12 of the drawn shapes are enough here
    for src in sorted(shapes_dir.rglob("*.png"))[:12]:
        (few / src.parent.name).mkdir(exist_ok=True)
        shutil.copy(src, few / src.parent.name / src.name)
    yield from served_photos(tmp_path_factory.mktemp("files"), few)


def _row(c, row_id: int) -> dict:
    r = c.post("/api/search", json={"like_id": row_id, "k": 1})
    assert r.status_code == 200, r.text
    hit = r.json()["results"][0]
    assert hit["id"] == row_id
    return hit


def _forge(path: Path, like: os.stat_result) -> None:
    os.utime(path, ns=(like.st_atime_ns, like.st_mtime_ns), follow_symlinks=False)


def _refused(c, hit: dict, secret: bytes | None = None) -> None:
    for url in (hit["file"], hit["thumbnail"] + "?size=48", hit["thumbnail"] + "?size=80"):
        r = c.get(url)
        assert r.status_code == 404 and r.json()["error"] and "\n" not in r.json()["error"], (url, r.text[:200])
        assert secret is None or secret not in r.content


def test_a_symlink_swapped_in_with_the_same_size_and_mtime_is_not_served(served, tmp_path):
    c, _, _ = served
    hit = _row(c, 3)
    path = Path(hit["path"])
    original, st = path.read_bytes(), path.stat()
    secret = (b"secret key material " * (len(original) // 20 + 1))[:len(original)]
    (tmp_path / "secret.bin").write_bytes(secret)
    _forge(tmp_path / "secret.bin", st)
    assert c.get(hit["file"]).content == original
    path.unlink()
    path.symlink_to(tmp_path / "secret.bin")   # the same size and mtime as the indexed file, followed by os.stat
    try:
        _refused(c, hit, secret[:40])
        assert "symbolic link" in c.get(hit["file"]).json()["error"]
    finally:
        path.unlink()
        path.write_bytes(original)
        _forge(path, st)
    assert c.get(hit["file"]).content == original   # the indexed file itself is served again


@pytest.mark.parametrize("how", ["in place", "renamed over"])
def test_a_file_replaced_with_the_same_size_and_mtime_is_not_served(served, how):
    c, _, _ = served
    hit = _row(c, 5 if how == "in place" else 6)
    path = Path(hit["path"])
    original, st = path.read_bytes(), path.stat()
    assert c.get(hit["file"]).content == original and c.get(hit["thumbnail"] + "?size=48").status_code == 200
    forged = original[:-64] + bytes(64)   # same size, other bytes
    if how == "in place":
        with open(path, "r+b") as f:
            f.write(forged)
    else:
        path.with_suffix(".new").write_bytes(forged)
        os.replace(path.with_suffix(".new"), path)
    _forge(path, st)
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    try:
        _refused(c, hit)
        assert "changed since it was indexed" in c.get(hit["file"]).json()["error"]
    finally:
        path.write_bytes(original)
        _forge(path, st)
    assert c.get(hit["file"]).content == original


def test_ranges_and_head_are_answered_from_the_checked_file(served):
    c, _, _ = served
    hit = _row(c, 8)
    whole = Path(hit["path"]).read_bytes()
    r = c.get(hit["file"])
    assert r.status_code == 200 and r.content == whole and r.headers["content-type"] == "image/png"
    assert r.headers["etag"] == f'"{hashlib.blake2b(whole, digest_size=16).hexdigest()}"'
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["accept-ranges"] == "bytes"
    r = c.get(hit["file"], headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == whole[-10:]
    assert r.headers["content-range"] == f"bytes {len(whole) - 10}-{len(whole) - 1}/{len(whole)}"
    r = c.get(hit["file"], headers={"Range": f"bytes={len(whole)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(whole)}"
    assert c.get(hit["file"], headers={"Range": "bytes=0-1,5-6"}).content == whole   # several ranges: all of it


def test_byte_ranges():
    assert byte_range(None, 100) is None and byte_range("items=1-2", 100) is None
    assert byte_range("bytes=10-19", 100) == (10, 20) and byte_range("bytes=90-", 100) == (90, 100)
    assert byte_range("bytes=-5", 100) == (95, 100) and byte_range("bytes=-500", 100) == (0, 100)
    assert byte_range("bytes=50-1000", 100) == (50, 100) and byte_range("bytes=9-3", 100) is None
    for bad in ("bytes=100-", "bytes=-0", "bytes=200-300"):
        with pytest.raises(RangeNotSatisfiable):
            byte_range(bad, 100)


def test_the_open_file_is_what_is_read_even_if_the_path_is_swapped_after_the_check(tmp_path):
    path, other = tmp_path / "a.png", tmp_path / "b.png"
    path.write_bytes(b"indexed bytes " * 100)
    other.write_bytes(b"swapped bytes " * 100)
    st = path.stat()
    digest = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    with open_indexed(str(path), st.st_size, st.st_mtime, digest, "row 0") as opened:
        os.replace(other, path)
        assert opened.read_all() == b"indexed bytes " * 100
    with pytest.raises(NotFound, match="changed since it was indexed"):
        open_indexed(str(path), st.st_size, None, digest, "row 0")
    with pytest.raises(NotFound, match="no content hash"):
        open_indexed(str(path), None, None, None, "row 0")


def test_rows_that_name_a_file_clipdex_never_read_are_not_served(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    ix = create_index(tmp_path / "vecs.clipdex", dim=8, model="none")   # index embeddings: paths from metadata
    ix.add_vectors("images", np.eye(8)[:2], {"path": [str(secret), str(tmp_path / "none.png")]})
    ix.close()
    with client(tmp_path / "vecs.clipdex", tmp_path / "cache") as c:
        for row_id in (0, 1):
            r = c.get(f"/api/file/vecs/images/{row_id}")
            assert r.status_code == 404 and "top secret" not in r.text and "no content hash" in r.json()["error"]

"""Dedup over images indexed from webdataset shards: a sample has no file, so its picture is read back from its tar by
key (``retrieval.io.shard_members``) for the probe codes and the pixel check; the shard indexer keeps each sample's
probe codes as it decodes it, and a shard changed since indexing is never taken as the row's picture."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from retrieval.io.imageprep import ImageReadError, content_hash
from retrieval.io.shard_members import MemberTable, list_image_members, read_row_image

pytest.importorskip("imagehash")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            _add(tar, name, data)
    return path


def test_each_key_reads_back_the_member_the_indexer_read(tmp_path):
    shard = _tar(tmp_path / "s.tar", [
        ("a.png", b"PNG-a"), ("a.jpg", b"JPG-a"), ("a.txt", b"caption"),   # jpg comes first in IMAGE_MEMBERS
        ("dir/b.webp", b"WEBP-b"), ("dir/b.json", b"{}"),
        ("c.txt", b"no image"),
        ("a.jpg", b"second sample of a"),                                   # a duplicate key: not the sample
    ])
    listed = list_image_members(str(shard))
    assert sorted(listed) == ["a", "dir/b"]
    table = MemberTable()
    assert table.read(str(shard), "a") == b"JPG-a"
    assert table.read(str(shard), "dir/b") == b"WEBP-b"
    with pytest.raises(ImageReadError, match="no image member"):
        table.read(str(shard), "c")
    with pytest.raises(ImageReadError, match="over the limit"):
        table.read(str(shard), "a", max_bytes=3)


def test_a_rewritten_shard_is_listed_again_and_a_changed_picture_refused(tmp_path):
    shard = _tar(tmp_path / "s.tar", [("k.jpg", b"first")])
    table = MemberTable()
    row = {"path": f"{shard}#k", "shard": str(shard), "key": "k", "hash": content_hash(b"first")}
    assert read_row_image(row, table=table) == b"first"
    _tar(shard, [("x.jpg", b"x" * 700), ("k.jpg", b"rewritten")])   # other offsets, other size
    os.utime(shard, ns=(1, 1))
    with pytest.raises(ImageReadError, match="changed since it was indexed"):
        read_row_image(row, table=table)
    assert read_row_image({**row, "hash": content_hash(b"rewritten")}, table=table) == b"rewritten"
    file = tmp_path / "f.jpg"
    file.write_bytes(b"a file")
    assert read_row_image({"path": str(file), "shard": None, "key": None}, table=table) == b"a file"


def test_a_truncated_shard_keeps_the_keys_before_the_damage(tmp_path):
    shard = _tar(tmp_path / "s.tar", [("a.jpg", b"A" * 600), ("b.jpg", b"B" * 5000)])
    data = shard.read_bytes()
    shard.write_bytes(data[:2200])   # b's header is there, most of its data is not
    table = MemberTable()
    assert table.read(str(shard), "a") == b"A" * 600
    with pytest.raises(ImageReadError):
        table.read(str(shard), "b")
    not_a_tar = tmp_path / "n.tar"
    not_a_tar.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ImageReadError):
        table.read(str(not_a_tar), "a")


@pytest.mark.parametrize("backend", ["lance", "faiss"])
def test_dedup_of_shard_samples_finds_the_groups_it_finds_for_the_same_files(tmp_path, backend, monkeypatch):
    import retrieval.query.dedup_hashes as dedup_hashes
    from clipdex.synthetic.dedup import make_dedup_images
    from indexers.images import ImageIndexOptions, index_images
    from indexers.shards import index_shards
    from retrieval.index.directory import create_index
    from retrieval.index.probe_codes import shard_paths
    from retrieval.io.shards import discover_shards
    from retrieval.io.sources import IMAGE_EXTENSIONS, discover
    from retrieval.query.dedup import DedupOptions, find_duplicates

    folder = tmp_path / "img"
    items = make_dedup_images(folder, n_originals=2, seed=3, negatives=1, transforms=("jpeg", "rotate", "colour"))
    shard = _tar(tmp_path / "00000.tar", [(Path(it.path).name, Path(it.path).read_bytes()) for it in items])
    opts = ImageIndexOptions(workers=0, batch_size=8, commit_rows=10, optimize=False)
    for name, index in (("files", lambda ix: index_images(ix, discover([str(folder)], IMAGE_EXTENSIONS), opts)),
                        ("shards", lambda ix: index_shards(ix, discover_shards([str(shard)]), opts))):
        ix = create_index(tmp_path / name, model="clipdex-tiny", backend=backend)
        index(ix)
        ix.close()
    assert shard_paths(tmp_path / "shards")   # the shard indexer kept each sample's codes

    coded = []
    probe = dedup_hashes.probe_codes
    monkeypatch.setattr(dedup_hashes, "probe_codes", lambda img: coded.append(img.size) or probe(img))

    def groups(name):   # byte-identical copies named as their original (which of them a group holds is a tie)
        result = find_duplicates(tmp_path / name, DedupOptions())
        assert result.summary["unverified"] == 0
        return sorted((g["kind"], sorted({Path(m["path"].split("#")[-1]).stem.removesuffix("-copy")
                                          for m in g["members"]})) for g in result.groups)

    by_shard = groups("shards")
    assert coded == []   # no sample decoded again for its codes
    assert by_shard == groups("files")
    near = [members for kind, members in by_shard if kind in ("near", "exact")]
    for g in range(2):   # each original grouped with its transformed copies, and no negative with any
        copies = {Path(it.path).stem.removesuffix("-copy") for it in items
                  if it.group == g and it.role in ("near", "exact")}
        assert any(copies | {f"o{g:04d}"} <= set(m) for m in near)
    assert not any(m.startswith("n") for _, members in by_shard for m in members)


def test_the_service_shows_a_shard_samples_thumbnail_and_refuses_it_once_the_shard_changed(tmp_path):
    pytest.importorskip("fastapi")
    import numpy as np
    from PIL import Image

    from clipdex.synthetic import COLORS, draw_shape
    from indexers.images import ImageIndexOptions
    from indexers.shards import index_shards
    from retrieval.index.directory import create_index
    from retrieval.io.shards import discover_shards
    from tests.serve_helpers import client

    pictures = [draw_shape(shape, COLORS[colour], size=96) for shape, colour in
                (("circle", "red"), ("square", "blue"), ("star", "green"))]

    def png(img):
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()

    shard = _tar(tmp_path / "00000.tar", [(f"k{i}.png", png(p)) for i, p in enumerate(pictures)])
    with create_index(tmp_path / "ix", model="clipdex-tiny") as ix:
        index_shards(ix, discover_shards([str(shard)]), ImageIndexOptions(workers=0, optimize=False))
    with client(tmp_path / "ix", tmp_path / "cache") as c:
        r = c.post("/api/search", json={"like_id": 1, "k": 1})
        assert r.status_code == 200, r.text
        hit = r.json()["results"][0]
        assert hit["path"].endswith("#k1")
        got = c.get(hit["thumbnail"], params={"size": 48})
        assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
        thumb = np.asarray(Image.open(io.BytesIO(got.content)).convert("RGB"), np.float32)
        want = np.asarray(pictures[1].convert("RGB").resize(thumb.shape[1::-1], Image.BICUBIC), np.float32)
        other = np.asarray(pictures[0].convert("RGB").resize(thumb.shape[1::-1], Image.BICUBIC), np.float32)
        assert np.abs(thumb - want).mean() < 0.3 * np.abs(thumb - other).mean()
        _tar(shard, [(f"k{i}.png", png(p)) for i, p in enumerate(pictures[1:] + pictures[:1])])   # not indexed again
        assert c.get(hit["thumbnail"], params={"size": 48}).status_code == 404   # the cached one is not served

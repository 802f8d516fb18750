"""Probe codes taken at index time: the indexer keeps, under each committed row's id, the codes dedup would take from
the file itself (JPEGs drafted for a small model included); dedup merges them and decodes nothing, codes that no
longer match their row's content are dropped, and without them dedup codes the files as before."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipdex.synthetic import COLORS, draw_shape
from indexers.images import ImageIndexOptions, index_images
from retrieval.index.directory import create_index, open_index
from retrieval.index.probe_codes import ProbeCodes, checked, digests_of, load_codes, read_shards, shard_paths
from retrieval.io.sources import IMAGE_EXTENSIONS, discover

pytest.importorskip("imagehash")


def _pictures(folder, n=6):
    """PNGs at 96 px, and large JPEGs (1,280 x 960: drafted to an eighth for clipdex-tiny's 64 px input)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = draw_shape(["circle", "square", "triangle", "star"][i % 4], COLORS[list(COLORS)[i % len(COLORS)]],
                         size=96, scale=0.4 + 0.05 * i, offset=(0.05 * (i % 3) - 0.05, 0.0))
        img.save(folder / f"p{i}.png")
        img.resize((1280, 960), Image.BICUBIC).rotate(3 * i, Image.BICUBIC).save(folder / f"big{i}.jpg", quality=90)
    return folder


def _run(ix, folder, **kw):
    opts = ImageIndexOptions(workers=0, batch_size=4, commit_rows=5, optimize=False, **kw)
    return index_images(ix, discover([str(folder)], IMAGE_EXTENSIONS), opts)


def _rows(ix):
    t = ix.store.take("images", np.arange(ix.store.max_id("images") + 1), ["id", "path", "hash"])
    return {r["id"]: r for r in t.to_pylist()}


@pytest.mark.parametrize("backend", ["lance", "faiss"])
def test_the_indexer_keeps_for_each_committed_row_the_codes_dedup_takes_from_its_file(tmp_path, backend):
    from retrieval.query.dedup_hashes import probe_file

    folder = _pictures(tmp_path / "img")
    ix = create_index(tmp_path / "ix", model="clipdex-tiny", backend=backend)
    try:
        _run(ix, folder)
        rows = _rows(ix)
        shards = shard_paths(ix.path)
        assert len(shards) >= 2   # one per commit (every 5 rows or more)
        codes = read_shards(shards)
        assert sorted(codes.ids.tolist()) == sorted(rows)
        assert (codes.digests == digests_of([rows[i]["hash"] for i in codes.ids.tolist()])).all()
        for i, row in rows.items():
            views, anchors = probe_file(row)
            assert np.array_equal(codes.views[codes.view_owner == i], views), row["path"]
            assert np.array_equal(codes.anchors[codes.anchor_owner == i], anchors), row["path"]
    finally:
        ix.close()


def test_dedup_merges_the_indexers_codes_and_decodes_no_file(tmp_path, monkeypatch):
    import retrieval.query.dedup_hashes as dedup_hashes
    from clipdex.synthetic.dedup import make_dedup_images
    from retrieval.query.dedup import DedupOptions, find_duplicates

    folder = tmp_path / "img"
    items = make_dedup_images(folder, n_originals=2, seed=3, negatives=0, transforms=("rotate", "screenshot"))
    ix = create_index(tmp_path / "ix", model="clipdex-tiny")
    _run(ix, folder)
    ix.close()
    coded = []
    probe = dedup_hashes.probe_codes
    monkeypatch.setattr(dedup_hashes, "probe_codes", lambda img: coded.append(img.size) or probe(img))
    result = find_duplicates(tmp_path / "ix", DedupOptions(k=1, min_score=0.999))
    assert coded == [] and shard_paths(tmp_path / "ix") == []
    assert len(load_codes(tmp_path / "ix").ids) == len(items)
    group_of = {m["path"]: i for i, g in enumerate(result.groups) for m in g["members"]}
    copies = [it for it in items if it.role == "near"]
    assert copies and all(group_of.get(it.path) == group_of.get(str(folder / f"o{it.group:04d}.png")) is not None
                          for it in copies)

    without = tmp_path / "ix2"   # the same files indexed without codes: dedup codes each file itself
    ix = create_index(without, model="clipdex-tiny")
    _run(ix, folder, probe_codes=False)
    ix.close()
    assert shard_paths(without) == []
    again = find_duplicates(without, DedupOptions(k=1, min_score=0.999))
    assert len(coded) == len(items)
    assert sorted(sorted(m["path"] for m in g["members"]) for g in again.groups) == \
        sorted(sorted(m["path"] for m in g["members"]) for g in result.groups)


def test_a_shard_whose_row_now_holds_another_picture_is_dropped(tmp_path):
    ix = create_index(tmp_path / "ix", model="clipdex-tiny")
    _run(ix, _pictures(tmp_path / "img", n=2))
    rows = _rows(ix)
    codes = read_shards(shard_paths(ix.path))
    ids = np.array(sorted(rows), np.int64)
    digests = digests_of([rows[i]["hash"] for i in ids.tolist()])
    assert sorted(checked(codes, ids, digests).ids.tolist()) == ids.tolist()
    digests[1] ^= np.uint64(1)        # row ids[1] now holds another picture
    kept = checked(codes, ids[:-1], digests[:-1])   # and the last row is gone
    assert sorted(kept.ids.tolist()) == [int(ids[0])] + ids[2:-1].tolist()
    assert set(kept.view_owner.tolist()) == set(kept.ids.tolist()) == set(kept.anchor_owner.tolist())
    ix.close()


def test_merged_codes_keep_each_rows_last_listing():
    def one(i, value, digest):
        return ProbeCodes.of_rows([i], [digest], [(np.full((2, 2), value, np.uint64), np.full((3, 2), value,
                                                                                                  np.uint64))])

    merged = ProbeCodes().extend([one(1, 5, 11), one(2, 6, 12), one(1, 7, 13), ProbeCodes.of_rows([3], [0], [None])])
    assert merged.ids.tolist() == [1, 2, 3] and merged.digests.tolist() == [13, 12, 0]
    assert merged.views[merged.view_owner == 1].tolist() == [[7, 7]] * 2
    assert merged.anchors[merged.anchor_owner == 2].tolist() == [[6, 6]] * 3
    assert 3 not in merged.view_owner.tolist()


def test_the_codes_survive_a_reopened_index_and_a_changed_file(tmp_path):
    folder = _pictures(tmp_path / "img", n=2)
    ix = create_index(tmp_path / "ix", model="clipdex-tiny")
    _run(ix, folder)
    ix.close()
    draw_shape("star", COLORS["blue"], size=96, scale=0.8).save(folder / "p0.png")   # changed: re-embedded
    ix = open_index(tmp_path / "ix", writable=True)
    _run(ix, folder)
    rows = _rows(ix)
    codes = read_shards(shard_paths(ix.path))
    ids = np.array(sorted(rows), np.int64)
    live = checked(codes, ids, digests_of([rows[i]["hash"] for i in ids.tolist()]))
    assert sorted(live.ids.tolist()) == ids.tolist()   # the old p0's codes are gone with its row
    ix.close()


def test_batched_hash_codes_are_imagehash_bit_for_bit():
    import imagehash

    from retrieval.algorithms.dedup_image import hash_codes

    rng = np.random.default_rng(0)
    images = [draw_shape(shape, COLORS[colour], size=size, scale=0.5)
              for shape, colour, size in [("circle", "red", 96), ("star", "blue", 37), ("square", "green", 300)]]
    images += [Image.new("RGB", (50, 40), (200, 200, 200)),   # flat: every DCT coefficient but one is 0
               Image.fromarray(rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)),
               Image.fromarray(rng.integers(0, 256, (7, 5), dtype=np.uint8), "L"),
               images[0].rotate(9, Image.BICUBIC).crop((5, 9, 90, 70))]
    got = hash_codes(images)
    for img, (p, d) in zip(images, got.tolist()):
        assert p == int(str(imagehash.phash(img)), 16) and d == int(str(imagehash.dhash(img)), 16)
    assert hash_codes([]).shape == (0, 2)

"""The image indexer: incremental runs, reuse by content hash, pruning, errors, manifests, worker processes."""
import csv
import os
import shutil

import numpy as np
import pyarrow as pa
import pytest

from clipdex.synthetic import COLORS, draw_shape, make_bad_files
from indexers.images import ImageIndexOptions, index_images
from retrieval.errors import InvalidInput
from retrieval.index.directory import create_index
from retrieval.io.sources import IMAGE_EXTENSIONS, discover

OPTS = ImageIndexOptions(workers=0, batch_size=16)


def run(ix, *sources, **kw):
    opts = ImageIndexOptions(**{**OPTS.__dict__, **kw})
    return index_images(ix, discover([str(s) for s in sources], IMAGE_EXTENSIONS), opts)


def rows(ix, table="images", cols=("id", "path")):
    if not ix.store.count(table):
        return {c: [] for c in cols}
    return pa.Table.from_batches(list(ix.store.scan(table, list(cols)))).to_pydict()


@pytest.fixture(params=["lance", "faiss"])
def ix(request, tmp_path):
    index = create_index(tmp_path / "ix", model="clipdex-tiny", backend=request.param)
    yield index
    index.close()


def test_first_run_embeds_every_image_and_records_bad_files(ix, shapes_copy, tiny):
    bad = make_bad_files(shapes_copy / "bad")
    s = run(ix, shapes_copy)
    assert (s.added, s.errors, s.unchanged) == (48, 3, 0)
    got = rows(ix, cols=("path", "width", "height", "bytes", "hash"))
    assert len(set(got["path"])) == 48 and set(got["width"]) == {96}
    errs = rows(ix, "errors", ("path", "stage", "reason"))
    assert sorted(errs["path"]) == sorted(bad)
    by_path = dict(zip(errs["path"], errs["stage"]))
    assert by_path[str(shapes_copy / "bad" / "empty.jpg")] == "read"
    assert by_path[str(shapes_copy / "bad" / "truncated.png")] == "decode"
    # the stored vector is the encoder's vector of that file
    path = str(shapes_copy / "circle" / "red_0.png")
    D, I = ix.search_vectors("images", tiny.encode_images([__import__("PIL.Image").Image.open(path)]), 1)
    assert ix.store.take("images", I[0], ["path"]).column("path")[0].as_py() == path and D[0, 0] > 0.9999


def test_second_run_has_nothing_to_do(ix, shapes_copy):
    make_bad_files(shapes_copy / "bad")
    run(ix, shapes_copy)
    s = run(ix, shapes_copy)
    assert (s.added, s.updated, s.reused, s.errors, s.unchanged, s.known_errors) == (0, 0, 0, 0, 48, 3)
    assert ix.store.count("images") == 48 and ix.store.count("errors") == 3


def test_changed_files_are_replaced_and_copies_reuse_vectors(ix, shapes_copy):
    run(ix, shapes_copy)
    target = shapes_copy / "circle" / "red_0.png"
    draw_shape("star", COLORS["green"], 96).save(target)
    os.utime(target, (1e9, 1e9))
    shutil.copy(shapes_copy / "square" / "blue_0.png", shapes_copy / "copy_of_blue_square.png")
    s = run(ix, shapes_copy)
    assert (s.updated, s.reused, s.added, s.unchanged) == (1, 1, 0, 47)
    got = rows(ix, cols=("id", "path", "hash"))
    assert len(got["path"]) == 49 and len(set(got["path"])) == 49
    h = dict(zip(got["path"], got["hash"]))
    assert h[str(shapes_copy / "copy_of_blue_square.png")] == h[str(shapes_copy / "square" / "blue_0.png")]


def test_renamed_files_reuse_vectors_and_prune_removes_the_old_rows(ix, shapes_copy):
    run(ix, shapes_copy)
    os.rename(shapes_copy / "star", shapes_copy / "stars")
    s = run(ix, shapes_copy)
    assert (s.reused, s.removed) == (12, 0) and ix.store.count("images") == 60
    s = run(ix, shapes_copy, prune=True)
    assert s.removed == 12 and ix.store.count("images") == 48
    assert not any("/star/" in p for p in rows(ix)["path"])


def test_prune_only_touches_rows_under_the_given_sources(ix, shapes_copy):
    run(ix, shapes_copy / "circle")
    run(ix, shapes_copy / "square")
    (shapes_copy / "square" / "red_0.png").unlink()
    s = run(ix, shapes_copy / "square", prune=True)
    assert s.removed == 1 and ix.store.count("images") == 23


def test_fixed_files_leave_the_errors_table(ix, shapes_copy):
    bad = make_bad_files(shapes_copy / "bad")
    run(ix, shapes_copy)
    truncated = shapes_copy / "bad" / "truncated.png"
    draw_shape("circle", COLORS["blue"], 96).save(truncated)
    s = run(ix, shapes_copy)
    assert s.added == 1 and ix.store.count("errors") == 2
    assert str(truncated) not in rows(ix, "errors", ("path",))["path"]
    assert len(bad) == 3


def test_manifest_with_captions_labels_and_metadata(ix, shapes_copy, tiny):
    manifest = shapes_copy / "pairs.csv"
    files = sorted((shapes_copy / "circle").glob("*.png"))
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "caption", "label", "photographer"])
        for i, p in enumerate(files):
            w.writerow([p.relative_to(shapes_copy), f"a {p.stem.split('_')[0]} circle", "circle", f"ann{i}"])
        w.writerow(["circle/missing.png", "gone", "circle", "x"])
    long_caption = " ".join(["a very long caption about a red circle"] * 20)  # ~160 tokens
    with open(manifest, "a", newline="") as f:
        csv.writer(f).writerow(["square/red_0.png", long_caption, "square", "bob"])
    s = run(ix, manifest)
    assert (s.added, s.errors, s.long_captions) == (13, 1, 1)
    got = rows(ix, cols=("path", "caption", "label", "photographer"))
    assert set(got["label"]) == {"circle", "square"} and got["photographer"][0].startswith("ann")
    # captions are embedded as text_vector with the same model
    q = tiny.encode_texts(["a red circle"])
    D, I = ix.search_vectors("images", q, 1, column="text_vector")
    hit = ix.store.take("images", I[0], ["caption"]).column("caption")[0].as_py()
    assert hit == "a red circle" and D[0, 0] > 0.999
    assert ix.store.count("images", "label = 'circle' AND photographer = 'ann3'") == 1


def test_worker_processes_give_the_same_vectors(tmp_path, shapes_dir):
    a = create_index(tmp_path / "a", model="clipdex-tiny")
    b = create_index(tmp_path / "b", model="clipdex-tiny")
    run(a, shapes_dir / "triangle")
    s = run(b, shapes_dir / "triangle", workers=2, chunk=3)
    assert s.added == 12

    def vecs(ix):
        t = pa.Table.from_batches(list(ix.store.scan("images", ["path", "vector"]))).sort_by("path")
        return np.stack(t.column("vector").to_numpy(zero_copy_only=False))

    np.testing.assert_allclose(vecs(a), vecs(b), atol=1e-6)


def test_duplicate_rows_left_by_a_crash_are_repaired(ix, shapes_copy):
    run(ix, shapes_copy / "circle")
    dup = ix.store.take("images", [0])
    dup = dup.set_column(0, "id", pa.array([10_000], pa.int64()))
    ix.add_rows("images", dup)  # as if a replacement was committed and its old row never deleted
    s = run(ix, shapes_copy / "circle")
    assert s.unchanged == 12 and ix.store.count("images") == 12
    assert 10_000 in rows(ix)["id"]  # the newest row of the path is kept


def test_sources_are_checked(tmp_path):
    with pytest.raises(InvalidInput, match="source not found"):
        discover([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no files to index"):
        discover([str(tmp_path / "empty")])
    bad = tmp_path / "m.csv"
    bad.write_text("file,caption\na.png,x\n")
    with pytest.raises(InvalidInput, match="no 'path' column"):
        discover([str(bad)])


def test_hidden_and_excluded_folders_are_skipped(tmp_path):
    for sub in ("keep", ".hidden", "skipme"):
        (tmp_path / sub).mkdir()
        draw_shape("circle", COLORS["red"], 32).save(tmp_path / sub / "a.png")
    draw_shape("circle", COLORS["red"], 32).save(tmp_path / "keep" / ".dot.png")
    found = discover([str(tmp_path)], IMAGE_EXTENSIONS, exclude=["skip*"])
    assert [os.path.relpath(i.path, tmp_path) for i in found.items] == ["keep/a.png"]


def test_manifest_columns_a_store_cannot_name_are_renamed_and_the_table_stays_readable(ix, tmp_path):
    index = ix
    """``a.b``, a backquote or a space in a manifest header would poison a Lance schema for every later run: the
    column is stored under the name shard metadata gets (``a_b``), on both backends, and filters find it."""
    (tmp_path / "img").mkdir()
    draw_shape("circle", COLORS["red"]).save(tmp_path / "img" / "a.png")
    draw_shape("square", COLORS["blue"]).save(tmp_path / "img" / "b.png")
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "a.b", "we`ird", "EXIF Make", "a_b", "_private"])
        w.writerows([["img/a.png", "x", "q", "Canon", "dup", "p"], ["img/b.png", "y", "r", "Nikon", "dup", "p"]])
    s = run(index, tmp_path / "pairs.csv")
    assert (s.added, s.errors) == (2, 0)
    names = index.store.schema("images").names
    assert {"a_b", "we_ird", "EXIF_Make"} <= set(names) and not {"a.b", "we`ird", "EXIF Make", "_private"} & set(names)
    assert index.store.count("images", where="a_b = 'y' AND EXIF_Make = 'Nikon'") == 1
    s = run(index, tmp_path / "pairs.csv")  # a later run reads the same table
    assert (s.added, s.unchanged) == (0, 2)
    if index.backend == "lance":
        import lancedb  # heavy: only to show another tool reads the table

        assert lancedb.connect(str(index.path / "lance")).open_table("images").count_rows() == 2

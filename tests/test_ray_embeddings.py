"""``clipdex index embeddings --engine ray``: a Ray task per source file writes Lance fragments, the driver commits
them and records the file as the local engine does: the same rows (counted, each (file, row) once), errors and
progress records; a re-run adds nothing; a file an interrupted local run left half done is finished where its
record says. Slow (Ray starts processes); two CPUs, a capped object store, loopback only."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from cli.main import cli
from clipdex.synthetic.embeddings import make_clip_retrieval_dir
from indexers.embedding_sources import discover_embeddings
from indexers.embeddings import index_embeddings
from retrieval.errors import InvalidInput
from retrieval.index.directory import create_index, open_index

ray = pytest.importorskip("ray", reason="the [ray] extra (in [dev])")
RAY_INIT = dict(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
SIZES = (300, 200, 150)
DIM = 16


@pytest.fixture(scope="module")
def local_ray():
    ray.init(**RAY_INIT)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_emb") / "emb"
    make_clip_retrieval_dir(root, dim=DIM, sizes=SIZES)
    return root


def rows(ix, table="images", key=("source_file", "source_row")) -> dict:
    """The table's rows by ``key``, once it is checked that no key is stored twice (rows read = distinct keys =
    the store's count)."""
    listed = pa.Table.from_batches(list(ix.store.scan(table))).to_pylist()
    by_key = {tuple(r[k] for k in key): r for r in listed}
    assert len(listed) == len(by_key) == ix.store.count(table)
    return by_key


def _same(local: dict, remote: dict) -> None:
    assert local.keys() == remote.keys()
    for k, a in local.items():
        b = remote[k]
        for col in ("path", "caption", "source_file", "source_row"):
            assert a[col] == b[col], (k, col)
        np.testing.assert_allclose(a["vector"], b["vector"], atol=1e-6)
        np.testing.assert_allclose(a["text_vector"], b["text_vector"], atol=1e-6)


@pytest.mark.slow
def test_ray_and_local_engines_store_the_same_rows_errors_and_records(tmp_path, source, local_ray):
    from indexers.ray_embeddings import index_embeddings_ray

    parts = discover_embeddings(source)
    with create_index(tmp_path / "local", dim=DIM, model="none") as ix:
        local_sum = index_embeddings(ix, parts, batch_rows=64).as_dict()
        local, local_err = rows(ix), rows(ix, "errors", ("path",))
        local_files = dict(ix.manifest["tables"]["images"]["embedding_files"])
    with create_index(tmp_path / "ray", dim=DIM, model="none") as ix:
        ray_sum = index_embeddings_ray(ix, parts, batch_rows=64, max_in_flight=2).as_dict()
        remote, remote_err = rows(ix), rows(ix, "errors", ("path",))
        remote_files = dict(ix.manifest["tables"]["images"]["embedding_files"])
        assert ix.store.count("images") == sum(SIZES) - 2 * 3  # two bad vectors in each non-empty file
        again = index_embeddings_ray(ix, parts, batch_rows=64).as_dict()
        assert ix.store.count("images") == sum(SIZES) - 6 and ix.store.count("errors") == 6
    for k in ("files", "skipped_files", "empty_files", "added", "errors", "error_reasons"):
        assert local_sum[k] == ray_sum[k], k
    _same(local, remote)
    assert local_err.keys() == remote_err.keys() and len(remote_err) == 6
    assert local_files == remote_files and sorted(remote_files.values()) == [150, 200, 300]
    assert again["added"] == 0 and again["skipped_files"] == 3 and again["files"] == 0
    ids = [r["id"] for r in remote.values()]
    assert len(set(ids)) == len(ids)


@pytest.mark.slow
def test_a_file_left_half_done_by_the_local_engine_is_finished_where_its_record_says(tmp_path, source, local_ray):
    from indexers.ray_embeddings import index_embeddings_ray

    parts = discover_embeddings(source)

    def stop_after_two_blocks(p):
        if p.done >= 128:
            raise KeyboardInterrupt

    with create_index(tmp_path / "full", dim=DIM, model="none") as ix:
        index_embeddings(ix, parts, batch_rows=64)
        full = rows(ix)
    with create_index(tmp_path / "half", dim=DIM, model="none") as ix:
        with pytest.raises(KeyboardInterrupt):
            index_embeddings(ix, parts, batch_rows=64, on_progress=stop_after_two_blocks)
        first = str(parts[0].path)
        assert ix.manifest["tables"]["images"]["embedding_files"] == {first: 128}
        summary = index_embeddings_ray(ix, parts, batch_rows=50).as_dict()  # another block size than the first run
        _same(full, rows(ix))
        assert ix.store.count("errors") == 6
    assert summary["files"] == 3 and summary["added"] == sum(SIZES) - 6 - 126  # rows 0-127 were there (2 bad)


@pytest.mark.slow
def test_cli_index_embeddings_engine_ray(tmp_path, source, local_ray):
    res = CliRunner().invoke(cli, ["index", "embeddings", str(source), "--index", str(tmp_path / "ix"), "--engine",
                                   "ray", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["added"] == sum(SIZES) - 6
    with open_index(tmp_path / "ix") as ix:
        assert ix.store.count("images") == sum(SIZES) - 6


def test_the_faiss_backend_is_refused_in_one_line(tmp_path, source):
    from indexers.ray_embeddings import index_embeddings_ray

    with create_index(tmp_path / "f", dim=DIM, model="none", backend="faiss") as ix:
        with pytest.raises(InvalidInput, match="writes Lance fragments.*faiss backend"):
            index_embeddings_ray(ix, discover_embeddings(source))

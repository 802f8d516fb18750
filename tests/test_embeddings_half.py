"""Issue 21 at small scale: float16 embeddings (clip-retrieval's ``img_emb/*.npy``) are stored as float16, the
import writes its fragments once (no copy left beside them until the next ``optimize``), searches score the stored
vectors, and the import streams its sources (memory bounded by a block, not by the data)."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexers.embedding_sources import discover_embeddings
from indexers.embeddings import index_embeddings
from retrieval.index.directory import create_index
from retrieval.store import lance_compact

D, FILES, ROWS, BLOCK = 128, 4, 1_700, 500  # each file: three full blocks and a short one


def _source(root: Path, rows: int = ROWS) -> np.ndarray:
    """clip-retrieval's layout with float16 vectors; returns them all (n, D) float16 in row order."""
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    rng = np.random.default_rng(21)
    xs = []
    for i in range(FILES):
        x = rng.standard_normal((rows, D)).astype(np.float32)
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
        np.save(root / "img_emb" / f"img_emb_{i}.npy", x)
        pq.write_table(pa.table({"image_path": [f"{i}/{j}.jpg" for j in range(rows)],
                                 "bucket": np.arange(rows) % 100}), root / "metadata" / f"metadata_{i}.parquet")
        xs.append(x)
    return np.concatenate(xs)


def _disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.fixture
def imported(tmp_path, monkeypatch):
    monkeypatch.setattr(lance_compact, "FRAGMENT_ROWS", BLOCK)  # the import's block, as 65,536 is at full size
    x = _source(tmp_path / "src")
    index = create_index(tmp_path / "ix", dim=D, model="none")
    summary = index_embeddings(index, discover_embeddings(tmp_path / "src"), batch_rows=BLOCK, model="none")
    assert summary.added == FILES * ROWS
    return index, x, tmp_path / "ix"


def test_float16_sources_are_stored_as_float16_and_written_once(imported):
    index, x, path = imported
    assert index.store.schema("images").field("vector").type.value_type == pa.float16()
    raw32 = x.size * 4
    after_import = _disk(path)
    assert after_import <= 0.65 * raw32  # 1.3x the float16 vectors: no second copy of the fragments left behind
    index.optimize("images")
    assert _disk(path) <= 0.65 * raw32 and index.store.count("images") == FILES * ROWS
    index.close()


def test_searches_score_the_stored_float16_vectors(imported):
    index, x, _ = imported
    xq = np.random.default_rng(5).standard_normal((20, D)).astype(np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    D_, I = index.store.search("images", xq, 10)
    exact = xq @ x.astype(np.float32).T  # ids are the rows in order: one id block per file
    best = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I.tolist(), best.tolist())]) >= 0.99
    np.testing.assert_allclose(D_, np.take_along_axis(exact, best, 1), atol=2e-3)
    rows = index.store.take("images", I[0, :3].tolist()).to_pylist()
    got = np.asarray([r["vector"] for r in rows], np.float32)
    np.testing.assert_array_equal(got, x[I[0, :3]].astype(np.float32))  # stored as given (unit already)
    index.close()


def test_the_import_streams_a_block_at_a_time(tmp_path):
    """Python-side allocations (numpy arrays included) stay a few blocks, not the 3.5 MB of float32 vectors."""
    x = _source(tmp_path / "src", rows=1_700)
    index = create_index(tmp_path / "ix", dim=D, model="none")
    parts = discover_embeddings(tmp_path / "src")
    tracemalloc.start()
    try:
        index_embeddings(index, parts, batch_rows=BLOCK, model="none")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    block32 = BLOCK * D * 4
    assert peak < 0.4 * x.size * 4 and peak < 6 * block32, (peak, block32)
    index.close()


def test_the_index_an_import_builds_is_chosen_within_the_import_budget(tmp_path, monkeypatch):
    """On a 64 GiB machine the automatic build after an import still plans within ``IMPORT_MEMORY`` (at 10M the
    in-memory float16 copy, 10 GB, would otherwise be chosen and the import's peak follow it)."""
    from indexers import common

    seen = []
    monkeypatch.setattr(common, "DEFAULT_EXACT_BELOW", 1_000)
    monkeypatch.setattr(common, "default_memory_budget", lambda: 64 << 30)
    monkeypatch.setattr(common, "optimize_table", lambda index, table, options: seen.append(options.memory) or {})
    _source(tmp_path / "src", rows=300)
    index = create_index(tmp_path / "ix", dim=D, model="none")
    index_embeddings(index, discover_embeddings(tmp_path / "src"), model="none")
    assert seen == [common.IMPORT_MEMORY] and common.IMPORT_MEMORY <= 6 << 30
    index.close()

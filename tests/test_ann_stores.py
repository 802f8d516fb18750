"""ANN indexes in both stores, always against brute force: tuned recall, rows added after the build, deletes,
persistence of the tuned search parameters across processes, and the ``clipdex optimize`` command."""
from __future__ import annotations

import json

import numpy as np
import pytest

from clipdex.synthetic.embeddings import clustered, normalize
from retrieval.ann.exact import recall_at_k
from retrieval.index.directory import create_index, open_index
from retrieval.index.optimize import OptimizeOptions, optimize_table
from tests.helpers import brute_force

D = 16
N = 2400
KINDS = [("faiss", "hnsw"), ("faiss", "ivf_flat"), ("faiss", "ivf_sq8"), ("faiss", "ivf_pq_fs"),
         ("lance", "IVF_PQ"), ("lance", "ivf_pq_fs"), ("lance", "hnsw")]  # lowercase on Lance: a FAISS sidecar


def build(tmp_path, backend, kind, n=N, recall=0.9):
    xb = clustered(n, D, seed=3)
    ix = create_index(tmp_path / "ix", dim=D, model="none", backend=backend)
    ix.add_vectors("images", xb[: n // 2])
    ix.add_vectors("images", xb[n // 2:])
    record = optimize_table(ix, "images", OptimizeOptions(recall=recall, kind=kind, exact_below=0, n_queries=60))
    return ix, xb, record


def queries(q=40, seed=9):
    return normalize(clustered(q, D, seed=seed) + 0.3 * normalize(np.random.default_rng(seed).standard_normal((q, D))))


@pytest.mark.parametrize("backend,kind", KINDS)
def test_tuned_index_meets_its_target_against_brute_force(tmp_path, backend, kind):
    ix, xb, record = build(tmp_path, backend, kind)
    assert record["kind"] != "flat" and record["params"] and record["n_queries"] >= 50
    assert record["met"] and record["recall_at_10"] >= 0.9
    xq = queries()
    _, I = ix.search_vectors("images", xq, 10)
    _, Ir = brute_force(xq, xb, 10)
    assert recall_at_k(I, Ir, 10) >= 0.85  # fresh queries, tuned on others: a little slack
    info = json.loads((tmp_path / "ix" / "clipdex.json").read_text())["tables"]["images"]["ann"]
    assert info["recall_at_10"] == record["recall_at_10"] and info["params"] == record["params"]
    ix.close()


@pytest.mark.parametrize("backend,kind", [("faiss", "hnsw"), ("faiss", "ivf_pq_fs"), ("lance", "IVF_PQ"),
                                          ("lance", "ivf_pq_fs")])
def test_rows_added_after_the_build_are_found_and_deletes_honoured(tmp_path, backend, kind):
    ix, xb, _ = build(tmp_path, backend, kind)
    fresh = clustered(30, D, seed=11)
    new_ids = ix.add_vectors("images", fresh)
    _, I = ix.search_vectors("images", fresh, 1)
    assert (I[:, 0] == new_ids).all()  # searched exactly until folded in
    gone = np.concatenate([np.arange(0, N, 3), new_ids[:10]])
    ix.delete("images", gone)
    keep_ids = np.setdiff1d(np.arange(N), gone)
    all_x = np.concatenate([xb, fresh])
    all_ids = np.concatenate([np.arange(N), new_ids])
    live = ~np.isin(all_ids, gone)
    xq = queries()
    _, I = ix.search_vectors("images", xq, 10)
    assert not np.isin(I, gone).any()
    _, Ir = brute_force(xq, all_x[live], 10, all_ids[live])
    assert recall_at_k(I, Ir, 10) >= 0.8
    ix.close()
    ix = open_index(tmp_path / "ix", writable=True)  # pending rows and deletions survive a reopen
    _, I = ix.search_vectors("images", fresh[10:], 1)
    assert (I[:, 0] == new_ids[10:]).all()
    _, I = ix.search_vectors("images", xq, 10)
    assert not np.isin(I, gone).any()
    ix.optimize("images")  # folds them in
    info = ix.store.ann_info("images")
    assert info.get("pending_rows", 0) == 0 and info["kind"] != "flat"
    _, I = ix.search_vectors("images", xq, 10)
    assert not np.isin(I, gone).any() and recall_at_k(I, Ir, 10) >= 0.8
    assert ix.store.count("images") == len(keep_ids) + 20
    ix.close()


@pytest.mark.parametrize("backend,kind", [("faiss", "ivf_flat"), ("lance", "IVF_PQ"), ("lance", "ivf_flat")])
def test_tuned_search_params_persist_across_processes(tmp_path, backend, kind):
    ix, _, record = build(tmp_path, backend, kind)
    ix.close()
    for writable in (False, True, False):  # a writable close must not lose the record
        ix = open_index(tmp_path / "ix", writable=writable)
        info = ix.store.ann_info("images")
        assert info["params"] == record["params"] and info["recall_at_10"] == record["recall_at_10"]
        ix.close()


@pytest.mark.parametrize("backend,kind", [("faiss", "ivf_flat"), ("lance", "IVF_FLAT")])
def test_index_optimize_builds_then_tunes_to_the_recall_target(tmp_path, backend, kind):
    from retrieval.ann.config import AnnConfig, AnnParams

    xb = clustered(N, D, seed=3)
    ix = create_index(tmp_path / "ix", dim=D, model="none", backend=backend)
    ix.add_vectors("images", xb)
    done = ix.optimize("images", AnnConfig(kind, 0, AnnParams(recall=0.9)))
    assert done["rebuilt"] and done["tuning"]["target"] == 0.9 and done["tuning"]["n_queries"] >= 50
    info = json.loads((tmp_path / "ix" / "clipdex.json").read_text())["tables"]["images"]["ann"]
    assert info["recall_at_10"] == done["tuning"]["recall_at_10"] and info["params"] == done["tuning"]["params"]
    again = ix.optimize("images", AnnConfig(kind, 0, AnnParams(recall=0.9, tune=False, rebuild=True)))
    assert again["rebuilt"] and "tuning" not in again
    ix.close()


def test_filtered_ann_search_keeps_k_matching_rows(tmp_path):
    ix, xb, _ = build(tmp_path, "faiss", "ivf_flat")
    xq = queries(10)
    ids = np.arange(N)
    _, I = ix.search_vectors("images", xq, 10, where=f"id IN ({','.join(map(str, ids[1::2]))})")
    assert (I % 2 == 1).all()
    _, Ir = brute_force(xq, xb[1::2], 10, ids[1::2])
    assert recall_at_k(I, Ir, 10) >= 0.8
    ix.close()


def test_text_like_queries_are_used_when_the_table_holds_captions(tmp_path):
    import pyarrow as pa

    from retrieval.store.base import vectors_to_arrow

    xb = clustered(N, D, seed=3)
    tv = normalize(xb + 0.5 * normalize(np.random.default_rng(4).standard_normal(xb.shape)))
    ix = create_index(tmp_path / "ix", dim=D, model="none", backend="faiss")
    schema = ix.ensure_table("images")
    cols = {f.name: pa.nulls(N, f.type) for f in schema}
    cols.update(id=pa.array(np.arange(N)), vector=vectors_to_arrow(xb, D), text_vector=vectors_to_arrow(tv, D))
    ix.add_rows("images", pa.table(cols, schema=schema))
    record = optimize_table(ix, "images", OptimizeOptions(recall=0.9, kind="ivf_flat", exact_below=0, n_queries=60))
    assert record["query_kind"] == "text" and record["met"]
    ix.close()


def test_optimize_cli_prints_the_plan_and_rejects_bad_recall(tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    xb = clustered(N, D, seed=3)
    ix = create_index(tmp_path / "ix", dim=D, model="none", backend="faiss")
    ix.add_vectors("images", xb)
    ix.close()
    runner = CliRunner()
    before = (tmp_path / "ix" / "clipdex.json").read_text()
    for bad in ("0", "1.2", "-0.5"):
        res = runner.invoke(cli, ["optimize", str(tmp_path / "ix"), "--recall", bad])
        assert res.exit_code == 1 and res.output.strip().startswith("error: --recall must be in (0, 1]")
    assert (tmp_path / "ix" / "clipdex.json").read_text() == before
    res = runner.invoke(cli, ["optimize", str(tmp_path / "ix"), "--recall", "0.9", "--exact-below", "0",
                              "--kind", "ivf_flat", "--memory", "1G"])
    assert res.exit_code == 0, res.output
    assert "plan: IVF" in res.output and "estimated build" in res.output and "recall@10" in res.output
    res = runner.invoke(cli, ["info", str(tmp_path / "ix")])
    assert "search ivf_flat (nprobe=" in res.output and "recall@10" in res.output


@pytest.mark.parametrize("first,then", [("IVF_PQ", "ivf_flat"), ("ivf_flat", "IVF_FLAT"), ("IVF_PQ", "flat")])
def test_a_lance_table_switches_between_lance_and_faiss_indexes(tmp_path, first, then):
    """From Lance's own index to a FAISS index beside the table (and back, and to exact search), the index asked
    for is the one built: the old one is dropped and the new one searched, never a table left flat."""
    ix, xb, _ = build(tmp_path, "lance", first)
    record = optimize_table(ix, "images", OptimizeOptions(recall=0.9, kind=then, exact_below=0, n_queries=60,
                                                          rebuild=True))
    assert record["kind"] == then and ix.store.ann_info("images")["kind"] == then
    _, I = ix.search_vectors("images", xb[:20], 1)
    assert I[:, 0].tolist() == list(range(20))
    ix.close()

"""The seam between the ANN layer and the layers above it: ``retrieval/ann`` measures arrays and returns typed
records, the index layer drives the stores only through what ``Store`` declares, and tuning walks one grid."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np

from clipdex.synthetic.embeddings import clustered
from retrieval.ann import selection, structures
from retrieval.ann.config import AnnConfig
from retrieval.ann.exact import exact_search, recall_at_k
from retrieval.ann.plan import DISK_KIND, IndexPlan, choose_index
from retrieval.ann.selection import drop_self, search_grid
from retrieval.ann.tuning import HeldOut, Tuned, sample_queries, tune
from retrieval.index.directory import create_index
from retrieval.index.optimize import OptimizeOptions, optimize_table
from retrieval.store.base import Store
from retrieval.store.faiss import FaissStore
from retrieval.store.lance import LanceStore

ROOT = Path(__file__).resolve().parents[1]
# what drives a store from above it: the index layer, and everything that reaches a store through an index
ABOVE_STORES = ("retrieval/index", "retrieval/query", "retrieval/classify", "indexers", "cli", "clipdex")
DRIVERS = {"optimize", "refresh_counts", "save_manifest", "set_search_params", "ann_grid", "ann_info", "check_kind"}


def _store_calls(paths) -> dict[str, set[str]]:
    """Methods called on a store (``store.m(...)``, ``self.store.m(...)``, ``index.store.m(...)``) -> where."""
    calls: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = ast.unparse(node.func.value)
                if owner == "store" or owner.endswith(".store"):
                    calls.setdefault(node.func.attr, set()).add(str(path.relative_to(ROOT)))
    return calls


def test_the_store_interface_declares_every_method_called_on_a_store_above_it():
    paths = [p for top in ABOVE_STORES for p in sorted((ROOT / top).rglob("*.py"))]
    calls = _store_calls(paths)
    assert {"set_search_params", "ann_grid", "optimize", "ann_info", "search", "iter_vectors"} <= set(calls)
    undeclared = {m: sorted(where) for m, where in calls.items() if not hasattr(Store, m)}
    assert not undeclared, f"called on stores but not declared by retrieval.store.base.Store: {undeclared}"
    # the ones tuning drives have no default: each backend states what it does
    assert {"ann_grid", "set_search_params", "ann_info", "optimize", "check_kind"} <= Store.__abstractmethods__
    for backend in (FaissStore, LanceStore):
        assert not backend.__abstractmethods__, backend


def test_the_ann_layer_takes_arrays_and_records_not_stores_or_index_directories():
    bad = []
    for path in sorted((ROOT / "retrieval" / "ann").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                bad += [f"{path.name}:{node.lineno} {node.name}({a.arg})" for a in args if a.arg in ("store", "ix")]
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in DRIVERS:
                bad.append(f"{path.name}:{node.lineno} calls .{node.func.attr}()")
    assert not bad, bad


def _ivf(n=3000, d=16):
    x = clustered(n, d, seed=3)
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    plan = choose_index(n, d, 1 << 30, 0.9, exact_below=0, kind="ivf_flat")
    index = structures.build_index(plan.factory, d, x, [(ids, x)], plan.build)

    def search(xq, k, params):
        return structures.search(index, xq, k, structures.SearchParams(plan.kind, params))
    return x, ids, plan, search


def test_tuning_needs_only_arrays_and_its_record_survives_a_store_round_trip(tmp_path):
    x, ids, plan, search = _ivf()
    q_ids, xq = sample_queries([(ids[:1500], x[:1500]), (ids[1500:], x[1500:])], len(ids), 80, 16, seed=0)
    held = HeldOut.drawn(q_ids, xq, "image")
    assert len(held.xq) == 80 and np.isin(held.exclude, ids).all()  # image-like: each leaves its own row out
    grid = search_grid(plan)
    tuned = tune(search, held, [(ids, x)], grid, 0.9)
    assert isinstance(tuned, Tuned) and tuned.met and tuned.tuned_to == 0.95 and tuned.query_kind == "image"
    assert tuned.params["nprobe"] in grid["nprobe"]
    # the recall it reports is what the searches at its params get against the exact oracle, own rows left out
    _, gt = exact_search(held.xq, [(ids, x)], 11)
    got = drop_self(search(held.xq, 11, tuned.params)[1], held.exclude, 10)
    assert tuned.recall == recall_at_k(got, drop_self(gt, held.exclude, 10), 10)
    assert not (got == held.exclude[:, None]).any()
    # the record is what a store keeps and gives back
    record = tuned.as_record("2026-01-01T00:00:00+00:00")
    ix = create_index(tmp_path / "ix", dim=16, model="none", backend="faiss")
    ix.add_vectors("images", x)
    ix.optimize("images", AnnConfig(plan.kind, 0, {"recall": 0.9, "tune": False}))  # built, not tuned
    ix.store.set_search_params("images", tuned.params, record=record)
    info = ix.store.ann_info("images")
    assert {k: info[k] for k in record} == record and info["params"] == tuned.params
    ix.close()


def test_tuning_walks_the_one_grid_of_the_structure(tmp_path, monkeypatch):
    """IndexPlan carries no grid of its own; the FAISS store's grid is ``search_grid`` of what it built, and tuning
    walks it: a grid of nprobe 3 alone (in no planned list) is what the tuned record ends up with."""
    assert "grid" not in {f.name for f in dataclasses.fields(IndexPlan)}
    ix = create_index(tmp_path / "ix", dim=16, model="none", backend="faiss")
    ix.add_vectors("images", clustered(2400, 16, seed=3))
    record = optimize_table(ix, "images", OptimizeOptions(recall=0.9, kind="ivf_flat", exact_below=0, n_queries=60))
    built = IndexPlan(record["kind"], record["factory"], record["build"])
    assert ix.store.ann_grid("images") == search_grid(built)
    assert record["params"]["nprobe"] in search_grid(built)["nprobe"]
    monkeypatch.setattr(selection, "NPROBE_GRID", [3])
    record = optimize_table(ix, "images", OptimizeOptions(recall=0.5, kind="ivf_flat", exact_below=0, n_queries=60))
    assert ix.store.ann_grid("images") == {"nprobe": [3]} and record["params"] == {"nprobe": 3}
    ix.close()


def test_the_structure_refined_from_disk_tunes_at_most_64_candidates_a_result():
    """Each candidate of ``ivf_pq_disk`` is a random read of the vector file: its grid stops at k_factor 64 (at 10M
    rows a deeper re-rank tuned on image queries left fresh text queries at recall 0.939), while an in-memory
    float16 refinement keeps 256."""
    disk = IndexPlan(DISK_KIND, "IVF8192,PQ256x4fs", {"nlist": 8192})
    memory = IndexPlan("ivf_pq_fs", "IVF8192,PQ256x4fs,Refine(SQfp16)", {"nlist": 8192})
    assert search_grid(disk)["k_factor"] == [4, 16, 64]
    assert search_grid(memory)["k_factor"][-1] == 256
    assert search_grid(disk)["nprobe"] == search_grid(memory)["nprobe"]

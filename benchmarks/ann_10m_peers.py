"""The methods of ``benchmarks/ann_10m.py``, each run in its own process (``--worker NAME``): clipdex's search
worker on the index the CLI built, and the peers built on the same float16 files. Each returns a dict of figures;
``sweep`` is the recall/QPS curve (batch QPS of the 1,000 queries)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.ann_10m import K, evict, recall, rss_anon

WHERE = "bucket = 7"


def _anon() -> int:
    import os

    return rss_anon(os.getpid())


def _batch(search, xq) -> tuple[float, np.ndarray]:
    search(xq[:16])
    t0 = time.perf_counter()
    I = search(xq)
    return len(xq) / (time.perf_counter() - t0), I


def _p50(search_one, xq, n=100) -> float:
    times = []
    for q in xq[:n]:
        t0 = time.perf_counter()
        search_one(q[None])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def _vectors(work: Path):
    """The float16 files, memory-mapped, in order."""
    files = sorted((work / "src" / "img_emb").glob("img_emb_*.npy"), key=lambda p: int(p.stem.split("_")[-1]))
    return [np.load(f, mmap_mode="r") for f in files]


def clipdex(work: Path, xq, gt, gtf, memory: int) -> dict:
    from retrieval.index.directory import open_index

    root = work / "ix.clipdex"
    evict(root)
    base = _anon()
    t0 = time.perf_counter()
    ix = open_index(root)
    ix.search_vectors("images", xq[:1], K)
    out = {"cold_first_query_s": round(time.perf_counter() - t0, 3)}
    info = ix.store.ann_info("images")
    out["ann"] = {k: info.get(k) for k in ("kind", "factory", "params", "recall_at_10", "memory_bytes", "disk_bytes",
                                           "reason", "refine")}
    qps, I = _batch(lambda q: ix.search_vectors("images", q, K)[1], xq)
    out.update(qps=qps, recall_at_10=recall(I, gt), p50_ms=_p50(lambda q: ix.search_vectors("images", q, K), xq))
    fq, If = _batch(lambda q: ix.search_vectors("images", q, K, where=WHERE)[1], xq)
    out.update(filtered_qps=fq, filtered_recall_at_10=recall(If, gtf), filtered_all_k=bool((If >= 0).all()),
               filtered_p50_ms=_p50(lambda q: ix.search_vectors("images", q, K, where=WHERE), xq, 30))
    params, sweep = dict(info.get("params") or {}), []
    if "nprobe" in params:
        for f in (0.25, 0.5, 1, 2, 4):
            p = {**params, "nprobe": max(1, int(params["nprobe"] * f))}
            ix.store.set_search_params("images", p, persist=False)
            s, Is = _batch(lambda q: ix.search_vectors("images", q, K)[1], xq)
            sweep.append({"param": p, "qps": s, "recall_at_10": recall(Is, gt)})
    out["sweep"] = sweep or [{"param": params, "qps": qps, "recall_at_10": out["recall_at_10"]}]
    out["rss_anon_grown"] = _anon() - base
    return out


def faiss_ivfpq_fs(work: Path, xq, gt, gtf, memory: int) -> dict:
    import faiss

    from retrieval.ann.plan import default_nlist

    parts = _vectors(work)
    n = sum(len(p) for p in parts)
    nlist = default_nlist(n)
    index = faiss.index_factory(xq.shape[1], f"IVF{nlist},PQ{xq.shape[1] // 2}x4fs", faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    train = min(n, max(50 * nlist, 20_000))
    sample = np.concatenate([np.asarray(p[np.sort(rng.choice(len(p), max(1, train * len(p) // n), replace=False))],
                                        np.float32) for p in parts])
    index.train(sample)
    del sample
    for p in parts:
        for s in range(0, len(p), 65536):
            index.add(np.asarray(p[s:s + 65536], np.float32))
    out = {"build_s": round(time.perf_counter() - t0, 1), "factory": f"IVF{nlist},PQ{xq.shape[1] // 2}x4fs"}
    sweep = []
    for nprobe in (8, 16, 32, 64, 128, 256, 512):
        if nprobe > nlist:
            break
        index.nprobe = nprobe
        qps, I = _batch(lambda q: index.search(q, K)[1], xq)
        sweep.append({"param": {"nprobe": nprobe}, "qps": qps, "recall_at_10": recall(I, gt)})
    out["sweep"] = sweep
    return out


def lancedb_ivf_pq(work: Path, xq, gt, gtf, memory: int) -> dict:
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(str(work / "lancedb_peer"))
    parts, row = _vectors(work), 0
    t0 = time.perf_counter()
    table = None
    for p in parts:
        for s in range(0, len(p), 65536):
            x = np.asarray(p[s:s + 65536], np.float32)   # its IVF_PQ builds 2.7x slower from float16 columns
            batch = pa.table({"id": np.arange(row, row + len(x)),
                              "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])})
            row += len(x)
            if table is None:
                table = db.create_table("t", batch, mode="overwrite")
            else:
                table.add(batch)
    table.create_index(metric="dot", vector_column_name="vector", index_type="IVF_PQ")   # its defaults otherwise
    out = {"build_s": round(time.perf_counter() - t0, 1), "rows": table.count_rows(), "vectors": "float32",
           "version": lancedb.__version__}
    sweep = []
    grid = [(n, r) for n in (10, 20, 50, 100) for r in (1, 5, 20, 50, 100)]
    grid += [(200, 100), (100, 300), (200, 300)]   # deeper: does it ever reach clipdex's recall?
    for nprobes, refine in grid:  # it refines from the table on disk: deeper is allowed
        def search(q, nprobes=nprobes, refine=refine):
            r = (table.search(list(q)).metric("dot").limit(K).nprobes(nprobes).refine_factor(refine)
                 .select(["id"]).to_arrow())
            qi, ids = r.column("query_index").to_numpy(), r.column("id").to_numpy()
            I = np.full((len(q), K), -1, np.int64)
            for j in range(len(q)):
                got = ids[qi == j][:K]
                I[j, :len(got)] = got
            return I
        qps, I = _batch(search, xq)
        sweep.append({"param": {"nprobes": nprobes, "refine_factor": refine}, "qps": qps,
                      "recall_at_10": recall(I, gt)})
    out["sweep"] = sweep
    return out


def autofaiss(work: Path, xq, gt, gtf, memory: int) -> dict:
    try:
        import autofaiss as af  # noqa: F401
    except ImportError:
        return {"absent": "autofaiss is not installed here: autofaiss 2.18.0 requires numpy<2 (pip would downgrade "
                           "the project's numpy 2.x); give --peer-python, a venv's python with numpy<2 and autofaiss "
                           "(benchmarks/ann_peer_autofaiss.py)"}
    return {"absent": "autofaiss installed but its run is not wired yet"}


def diskann(work: Path, xq, gt, gtf, memory: int) -> dict:
    try:
        import diskannpy  # noqa: F401
    except ImportError:
        return {"absent": "diskannpy is not installed here: diskannpy 0.7.0 requires numpy<2 (pip would downgrade "
                           "the project's numpy 2.x); give --peer-python, a venv's python with numpy<2 and diskannpy "
                           "(benchmarks/ann_peer_diskann.py)"}
    return {"absent": "diskannpy installed but its run is not wired yet"}


METHODS = {"clipdex": clipdex, "faiss_ivfpq_fs": faiss_ivfpq_fs, "lancedb_ivf_pq": lancedb_ivf_pq,
           "autofaiss": autofaiss, "diskann": diskann}

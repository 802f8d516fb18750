"""The autofaiss peer of ``benchmarks/ann_10m.py``, run by another interpreter: autofaiss 2.x requires numpy<2,
which this project's environment cannot take, so it lives in a venv of its own (numpy<2, autofaiss, its faiss-cpu)::

    python -m venv /path/peers && /path/peers/bin/pip install "numpy<2" autofaiss
    python benchmarks/ann_10m.py --rows N --work DIR --methods autofaiss --peer-python /path/peers/bin/python

It builds clip-retrieval's route (``autofaiss build_index`` over the float16 ``img_emb/`` files, inner product,
``max_index_memory_usage`` = the run's budget), reads the index memory-mapped as ``clip back
--enable_faiss_memory_mapping`` does, and sweeps nprobe around autofaiss's own setting. It imports only numpy, faiss
and autofaiss, and prints one JSON line (the figures ``ann_10m.py`` records for every peer).
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np


def recall(I: np.ndarray, gt: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(I, gt)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--memory-bytes", type=int, required=True)
    args = ap.parse_args()
    import faiss
    from autofaiss import build_index

    work, out = args.work, args.work / "autofaiss_peer"
    out.mkdir(exist_ok=True)
    xq = np.load(work / "q.npy").astype(np.float32)
    gt = np.load(work / "gt.npy")
    budget = f"{max(1, args.memory_bytes >> 20)}MB"
    t0 = time.perf_counter()
    build_index(embeddings=str(work / "src" / "img_emb"), index_path=str(out / "knn.index"),
                index_infos_path=str(out / "infos.json"), max_index_memory_usage=budget,
                current_memory_available="6GB", metric_type="ip",  # the ceiling for clipdex's import
                verbose=30)
    build_s = time.perf_counter() - t0
    if not (out / "infos.json").exists():
        print(json.dumps({"error": "autofaiss built no index (its log says why)", "build_s": round(build_s, 1)}))
        return
    infos = json.loads((out / "infos.json").read_text())
    index = faiss.read_index(str(out / "knn.index"), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    params = faiss.ParameterSpace()
    own = str(infos.get("index_param", ""))
    m = re.search(r"nprobe=(\d+)", own)
    base = int(m.group(1)) if m else 16
    sweep = []
    for nprobe in sorted({max(1, base // 4), max(1, base // 2), base, base * 2, base * 4, base * 8}):
        knobs = re.sub(r"nprobe=\d+", f"nprobe={nprobe}", own) if m else f"nprobe={nprobe}"
        params.set_index_parameters(index, knobs)
        index.search(xq[:16], 10)
        t = time.perf_counter()
        _, I = index.search(xq, 10)
        sweep.append({"param": {"nprobe": nprobe, "set": knobs}, "qps": len(xq) / (time.perf_counter() - t),
                      "recall_at_10": recall(I, gt)})
    print(json.dumps({"build_s": round(build_s, 1), "factory": infos.get("index_key"), "own_setting": own,
                      "index_bytes": (out / "knn.index").stat().st_size, "memory_budget": budget, "sweep": sweep}))


if __name__ == "__main__":
    main()

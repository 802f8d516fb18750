"""Cold CLI text query: ``clipdex search INDEX "text"`` in a fresh process, against ``python -c "import torch,
open_clip"`` measured in the same run (interleaved, so that load on the machine hits both alike).

    python benchmarks/cold_query.py [--model clipdex-tiny] [--rounds 5] [--out benchmarks/results]

Builds a Lance and a FAISS index of 24 drawn shapes with ``--model`` in a temporary folder (its own
``XDG_CACHE_HOME``, so the text tower is exported there when the model is first loaded), then runs each round, in
this order: the torch import, the Lance query on the exported text tower, the Lance query with
``CLIPDEX_TEXT_TOWER=torch`` (the torch path), the same two on FAISS. Reports median wall seconds, each query's
ratio to the torch import, and whether the tower's results equal the torch path's (same ids, scores within 1e-4).
Writes <out>/cold_query.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_io import save_result  # benchmarks/results_io.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERY = "a red circle on a white background"


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - t, out


def rows(out: str) -> list[tuple[int, float]]:
    return [(r["id"], r["score"]) for r in map(json.loads, out.splitlines())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="clipdex-tiny")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache"), "PYTHONPATH": str(ROOT),
               "HF_HUB_OFFLINE": "1"}
        subprocess.run([sys.executable, "-c", f"from clipdex.synthetic import make_shapes; "
                        f"make_shapes({str(Path(tmp) / 'shapes')!r}, per_pair=1, size=64)"], env=env, check=True)
        clipdex = [sys.executable, "-m", "cli.main"]
        for backend in ("lance", "faiss"):  # indexing loads the model, which exports its text tower
            subprocess.run(clipdex + ["index", "images", str(Path(tmp) / "shapes"), "--index",
                                      str(Path(tmp) / f"{backend}.clipdex"), "--model", args.model, "--backend",
                                      backend], env=env, check=True, capture_output=True)
        torch_env = {**env, "CLIPDEX_TEXT_TOWER": "torch"}
        runs = {"import torch, open_clip": ([sys.executable, "-c", "import torch, open_clip"], env)}
        for backend in ("lance", "faiss"):
            q = clipdex + ["search", str(Path(tmp) / f"{backend}.clipdex"), QUERY, "--json", "-k", "10"]
            runs[f"search {backend} (text tower)"] = (q, env)
            runs[f"search {backend} (torch)"] = (q, torch_env)
        times: dict[str, list[float]] = {name: [] for name in runs}
        outs: dict[str, str] = {}
        for r in range(args.rounds):
            for name, (cmd, e) in runs.items():
                dt, outs[name] = timed(cmd, e)
                times[name].append(dt)
            print(f"round {r + 1}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()), flush=True)
    base = float(np.median(times["import torch, open_clip"]))
    result = {name: {"median_s": round(float(np.median(t)), 3), "runs_s": [round(x, 3) for x in t],
                     "x_torch_import": round(float(np.median(t)) / base, 3)} for name, t in times.items()}
    equal = {}
    for backend in ("lance", "faiss"):
        a, b = rows(outs[f"search {backend} (text tower)"]), rows(outs[f"search {backend} (torch)"])
        equal[backend] = [i for i, _ in a] == [i for i, _ in b] and bool(
            np.allclose([s for _, s in a], [s for _, s in b], atol=1e-4))
    out = {"model": args.model, "query": QUERY, "rounds": args.rounds, "results": result, "tower_equals_torch": equal}
    save_result(out, Path(args.out) / "cold_query.json")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

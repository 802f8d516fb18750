"""How long ``clipdex dedup`` takes on a large table, and how much memory: N realistic CLIP-like image vectors
(``clipdex.synthetic.ann_realistic``, the calibrated generator) with planted duplicate clusters, imported with
``clipdex index embeddings --model none`` (which builds the ANN index past 100,000 rows), then ``clipdex dedup``
timed as a user runs it (its own process, wall time and peak resident memory from ``/usr/bin/time -v``).

Planted clusters: ``--clusters`` rows each get 1 to 3 copies (the row's vector plus noise, cosine about 0.99, and
the same content ``hash``, so that verification names them exact without files to read, as a re-saved copy is).
The report: import and dedup wall time and peak memory, the ANN index's own size (its budget), candidate pairs,
groups found, and the planted clusters recovered whole, and the load average around the dedup run (the 2 cores are
shared). ``--setup-only`` generates and imports (kept; the figures in ``setup.json``) and ``--reuse`` times dedup on
that index, so the import is run once and reported apart from the dedup.

    python benchmarks/dedup_scale.py --rows 1000000 --work /work/cache/dedupscale

Measured (2 shared cores, load average 9-10; results/dedup_scale_1000000.json): 1,000,000 rows deduplicated in
500 s of wall time and 184 CPU-seconds, peak RSS 1.7 GB of which 1.15 GB is the index's memory-mapped vector file
(anonymous memory about 0.5 GB; the ANN budget is 3 GiB), all 992 planted clusters found whole; a re-run with
nothing new 10 s. The import (set-up, not dedup): 1,916 s, peak 5.6 GB. At 300,000 rows: see
results/dedup_scale_300000.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.results_io import command, save_result  # noqa: E402
from clipdex.synthetic.ann_realistic import make_realistic_corpus  # noqa: E402


def plant(x: np.ndarray, start: int, rng: np.random.Generator, clusters: int, noise: float) -> list[list[int]]:
    """Overwrite rows of block ``x`` (rows start..) with noisy copies of other rows of it: (b, D) in place; returns
    the planted clusters as global row numbers (the original first)."""
    b = len(x)
    picks = rng.permutation(b)
    out, used = [], 0
    for _ in range(clusters):
        size = int(rng.integers(2, 5))
        if used + size > b:
            break
        members = picks[used:used + size]
        used += size
        base = x[members[0]]
        for m in members[1:]:
            y = base + noise * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(len(base))
            x[m] = y / np.linalg.norm(y)
        out.append([start + int(m) for m in members])
    return out


def write_sources(src: Path, rows: int, clusters: int, noise: float, seed: int = 0) -> list[list[int]]:
    """Parquet files (one per generator block) of ``vector``, ``path`` and ``hash``; returns the planted clusters."""
    src.mkdir(parents=True, exist_ok=True)
    corpus = make_realistic_corpus(rows, seed=seed, n_queries=10)
    rng = np.random.default_rng([seed, 99])
    planted = []
    per_block = max(1, clusters // corpus.num_blocks)
    for b in range(corpus.num_blocks):
        x = corpus.block(b)
        start = b * corpus.block_size
        got = plant(x, start, rng, per_block, noise)
        planted += got
        hashes = [f"h{start + i}" for i in range(len(x))]
        for c in got:
            for m in c[1:]:
                hashes[m - start] = f"h{c[0]}"
        table = pa.table({"vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]),
                          "path": [f"img/{start + i}.jpg" for i in range(len(x))], "hash": hashes})
        pq.write_table(table, src / f"part{b:04d}.parquet")
    return planted


def timed(cmd: list[str], nice: int) -> tuple[float, int, str]:
    """Run ``cmd`` under /usr/bin/time -v (and nice); returns (wall seconds, peak RSS bytes, output with the CPU
    seconds line)."""
    full = ["nice", "-n", str(nice), "/usr/bin/time", "-v", *cmd]
    t0 = time.monotonic()
    proc = subprocess.run(full, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) * 1024
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", proc.stderr))
    return wall, rss, proc.stdout + "\n" + proc.stderr + f"\ncpu_seconds {cpu:.1f}\n"


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--clusters", type=int, default=None, help="planted clusters (default rows/1000)")
    ap.add_argument("--noise", type=float, default=0.1, help="noise of a planted copy (cosine ~ 1 - noise^2/2)")
    ap.add_argument("--min-score", type=float, default=0.95)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--backend", choices=["lance", "faiss"], default="lance")
    ap.add_argument("--work", default="/work/cache/dedup1m")
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the generated data (deleted by default)")
    ap.add_argument("--reuse", action="store_true", help="time dedup on the index a --keep run left (no import)")
    ap.add_argument("--setup-only", action="store_true",
                    help="generate and import only (kept for --reuse runs; their figures go into setup.json)")
    ap.add_argument("--name", default=None, help="result name (default dedup_scale_<rows>)")
    args = ap.parse_args()
    work = Path(args.work) / f"n{args.rows}"
    clusters = args.clusters if args.clusters is not None else max(1, args.rows // 1000)
    clipdex = [sys.executable, "-m", "cli.main"]
    ix = work / "ix"
    if args.reuse:
        known = work / "planted.json"   # else the same seeded sources are written again to find them
        planted = json.loads(known.read_text()) if known.exists() else write_sources(work / "src", args.rows,
                                                                                       clusters, args.noise)
        setup = json.loads((work / "setup.json").read_text()) if (work / "setup.json").exists() else {}
        gen_s, imp_s, imp_rss = setup.get("generate_s"), setup.get("import_s"), setup.get("import_peak_rss")
        setup_command = setup.get("command")
        shutil.rmtree(ix / "cache" / "dedup", ignore_errors=True)
    else:
        setup_command = None
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.monotonic()
        planted = write_sources(work / "src", args.rows, clusters, args.noise)
        (work / "planted.json").write_text(json.dumps(planted))
        gen_s = time.monotonic() - t0
        imp_s, imp_rss, _ = timed([*clipdex, "index", "embeddings", str(work / "src"), "--index", str(ix),
                                   "--model", "none", "--backend", args.backend, "--json"], args.nice)
        (work / "setup.json").write_text(json.dumps({"generate_s": gen_s, "import_s": imp_s, "import_peak_rss": imp_rss,
                                                     "load_after_import": os.getloadavg(), "command": command()}))
        if args.setup_only:
            return
    ann_dir = ix / "lance" / "_ann"
    ann_bytes = folder_bytes(ann_dir) if ann_dir.exists() else None
    out = work / "groups.jsonl"
    cmd = [*clipdex, "dedup", str(ix), "--min-score", str(args.min_score), "-k", str(args.k), "--format", "jsonl"]
    load_before = os.getloadavg()
    dd_s, dd_rss, text = timed(cmd, args.nice)
    load_after = os.getloadavg()
    out.write_text(text)
    groups = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    found = {frozenset(g["ids"]) for g in groups}
    id_of = _ids_by_path(groups)
    whole = sum(frozenset(id_of.get(m, -1) for m in c) in found for c in planted)
    again_s, again_rss, _ = timed(cmd, args.nice)   # a re-run: nothing new to search
    summary = _summary_line(text)
    result = {"rows": args.rows, "backend": args.backend, "k": args.k, "min_score": args.min_score,
              "planted_clusters": len(planted), "planted_rows": sum(len(c) for c in planted),
              "generate_s": gen_s and round(gen_s, 1), "import_s": imp_s and round(imp_s, 1),
              "import_peak_rss_mb": imp_rss and imp_rss >> 20,
              "dedup_s": round(dd_s, 1), "dedup_cpu_s": _cpu(text), "dedup_peak_rss_mb": dd_rss >> 20,
              "rerun_s": round(again_s, 1),              "rerun_peak_rss_mb": again_rss >> 20,
              "vectors_mb": args.rows * 512 * 4 >> 20, "index_dir_mb": folder_bytes(ix) >> 20,
              "ann_sidecar_mb": None if ann_bytes is None else ann_bytes >> 20,
              "ann": {k: v for k, v in json.loads((ix / "clipdex.json").read_text())["tables"]["images"]["ann"].items()
                      if k in ("kind", "factory", "params", "memory_bytes", "disk_bytes", "memory_budget")},
              "groups": len(groups), "planted_found_whole": whole, "summary": summary, "setup_command": setup_command,
              "load_average_1_5_15": {"before_dedup": [round(v, 1) for v in load_before],
                                      "after_dedup": [round(v, 1) for v in load_after]}}
    path = save_result(result, name=args.name or f"dedup_scale_{args.rows}")
    print(json.dumps(result, indent=1))
    print(f"saved {path}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def _ids_by_path(groups: list[dict]) -> dict[int, int]:
    """Planted clusters are row numbers; rows' paths carry them (img/<row>.jpg): row number -> index id."""
    out = {}
    for g in groups:
        for m in g["members"]:
            row = int(Path(m["path"]).stem)
            out[row] = m["id"]
    return out


def _cpu(text: str) -> float | None:
    found = re.findall(r"cpu_seconds ([\d.]+)", text)
    return float(found[-1]) if found else None


def _summary_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if "candidate pairs" in ln]
    return lines[-1].strip() if lines else ""


if __name__ == "__main__":
    main()

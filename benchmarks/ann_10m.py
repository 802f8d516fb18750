"""Issue 21's workload: CLIP-like vectors beyond RAM, searched within a memory budget, clipdex beside its peers.

Data (``prepare``): ``--rows`` realistic 512-d vectors (``clipdex.synthetic.ann_realistic``, calibrated on CLIP) in
clip-retrieval's layout as it writes it: float16 ``img_emb/img_emb_{i}.npy`` (10 files) and
``metadata/metadata_{i}.parquet`` (``image_path``, ``bucket``: 100 values), 1,000 fresh text-like queries
(``q.npy``, not drawn from the table), the exact top-10 (of the float16 vectors as stored) without and with
``bucket = 7``.

clipdex runs as a user runs it, each command its own process whose RssAnon is sampled from /proc (peak and a
time series) and whose index folder is measured on disk while it runs (the transient peak)::

    clipdex index embeddings SRC --index IX --model none  (+ --memory, scaled, below 10M: 3G is the import's own)
    clipdex optimize IX --recall 0.95 --memory 3G         (--memory scales with --rows: 3G at 10M, ~300 B a row)
    clipdex search IX --vectors q.npy -k 10 --json        and  --where "bucket = 7"

then a search worker process: the index files evicted from the page cache (``posix_fadvise(DONTNEED)``), a cold open
and first query, warm single-query p50, batch QPS, filtered QPS and recall, peak RssAnon. Peers, each measured in its
own process with the same RssAnon sampling: faiss IVF-PQ fast scan without refinement (nprobe swept), LanceDB IVF_PQ
refined from the table (nprobes x refine_factor swept; its vectors as float32, from which its IVF_PQ builds 2.7x
faster than from float16), autofaiss (memory-mapped, as ``clip back --enable_faiss_memory_mapping``) and DiskANN
(``benchmarks/ann_peer_diskann.py``: its SSD index, PQ-compressed into the budget). autofaiss and diskannpy need
numpy<2: they run under ``--peer-python`` (a venv of their own) and are recorded as absent without it.

    python benchmarks/ann_10m.py --rows 10000000 --work /path/with/60GB     # the issue's run
    python benchmarks/ann_10m.py --rows 300000 --work /work/cache/scale     # what a small machine allows

Results: ``benchmarks/results/ann_10m.json`` (or ``ann_<rows>.json``) and a plot beside it; ``--keep`` keeps the data
(deleted otherwise: tens of GB at 10M), ``--reuse`` runs on a kept run's data, ``--merge`` keeps the result file's
other methods and notes. A failed clipdex step stops the run (non-zero exit, its stderr) and nothing is saved.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.results_io import RESULTS, save_result  # noqa: E402
from clipdex.synthetic.ann_realistic import make_realistic_corpus  # noqa: E402

DIM, FILES, K, BUCKETS = 512, 10, 10, 100
GT_BLOCK = 131_072


def prepare(work: Path, rows: int, n_queries: int = 1000) -> dict:
    """Write the corpus (float16, 10 files), metadata and queries; the exact top-10 of both query sets."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = work / "src"
    (src / "img_emb").mkdir(parents=True, exist_ok=True)
    (src / "metadata").mkdir(exist_ok=True)
    corpus = make_realistic_corpus(rows, DIM, n_queries=8, seed=21)
    xq = corpus.text_queries(n_queries, seed=11)  # fresh text-like queries
    np.save(work / "q.npy", xq)
    per = -(-rows // FILES)
    bucket = np.random.default_rng(5).integers(0, BUCKETS, rows)
    D = np.full((n_queries, 0), -np.inf, np.float32)
    I = np.zeros((n_queries, 0), np.int64)
    Df, If = D.copy(), I.copy()
    row, block, buf = 0, 0, []
    for f in range(FILES):
        parts = []
        while sum(len(p) for p in parts) < min(per, rows - f * per):
            if not buf:
                buf = [corpus.block(block)]
                block += 1
            need = min(per, rows - f * per) - sum(len(p) for p in parts)
            parts.append(buf[0][:need])
            buf = [buf[0][need:]] if len(buf[0]) > need else []
        x16 = np.concatenate(parts).astype(np.float16)
        del parts
        np.save(src / "img_emb" / f"img_emb_{f}.npy", x16)
        ids = np.arange(row, row + len(x16))
        pq.write_table(pa.table({"image_path": [f"images/{i:09d}.jpg" for i in ids], "bucket": bucket[ids]}),
                       src / "metadata" / f"metadata_{f}.parquet")
        for a in range(0, len(x16), GT_BLOCK):  # the exact top-k a block at a time: 1,000 x 1M scores are 4 GB
            s = xq @ x16[a:a + GT_BLOCK].astype(np.float32).T
            blk = ids[a:a + GT_BLOCK]
            D, I = _merge(D, I, s, blk)
            m = bucket[blk] == 7
            Df, If = _merge(Df, If, s[:, m], blk[m])
        row += len(x16)
    np.save(work / "gt.npy", I)
    np.save(work / "gt_bucket7.npy", If)
    return {"rows": rows, "raw_float32_bytes": rows * DIM * 4, "raw_float16_bytes": rows * DIM * 2}


def _merge(D, I, s, ids):
    """The running top-K ``(D, I)`` (q, <=K) merged with the block's scores ``s`` (q, n) of rows ``ids`` (n,)."""
    D2 = np.concatenate([D, s], 1)
    I2 = np.concatenate([I, np.broadcast_to(ids, s.shape)], 1)
    if D2.shape[1] > K:
        part = np.argpartition(-D2, K - 1, axis=1)[:, :K]
        D2, I2 = np.take_along_axis(D2, part, 1), np.take_along_axis(I2, part, 1)
    top = np.argsort(-D2, axis=1)
    return np.take_along_axis(D2, top, 1), np.take_along_axis(I2, top, 1)


def recall(I: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / K for a, b in zip(I, gt)]))


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).exists() else 0


def rss_anon(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon"))
    except (OSError, StopIteration):
        return 0


def run_watched(cmd: list[str], watch: Path | None = None, every: float = 0.5) -> dict:
    """Run ``cmd``; sample its RssAnon (and its children's) and the size of ``watch`` while it runs."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    series, disk = [], []

    def sample():
        while proc.poll() is None:
            kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            anon = rss_anon(proc.pid) + sum(rss_anon(int(k)) for k in kids)
            series.append((round(time.perf_counter() - t0, 1), anon))
            if watch is not None:
                disk.append(dir_size(watch))
            time.sleep(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    thread.join()
    return {"cmd": " ".join(cmd), "rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_anon": max((m for _, m in series), default=0),
            "memory_series": series[::max(1, len(series) // 200)],
            "disk_peak": max(disk, default=0), "stdout": out, "stderr_tail": err[-4000:]}


def clipdex_cli(work: Path, memory: str, scaled: bool = False) -> dict:
    """The user's commands; ``scaled``: the import is given the (scaled) budget too, as 3G is its own at 10M."""
    ix, exe = work / "ix.clipdex", shutil.which("clipdex") or "clipdex"
    out = {"import": run_watched([exe, "-v", "index", "embeddings", str(work / "src"), "--index", str(ix), "--model",
                                  "none", *(["--memory", memory] if scaled else [])], ix)}
    checked(out["import"])
    out["disk_after_import"] = dir_size(ix)
    out["optimize"] = checked(run_watched([exe, "-v", "optimize", str(ix), "--recall", "0.95", "--memory", memory],
                                          ix))
    out["disk_after_optimize"] = dir_size(ix)
    out["info"] = checked(run_watched([exe, "info", str(ix)]))["stdout"]
    gt, gtf = np.load(work / "gt.npy"), np.load(work / "gt_bucket7.npy")
    for key, extra, truth in (("search", [], gt), ("search_bucket7", ["--where", "bucket = 7"], gtf)):
        r = checked(run_watched([exe, "search", str(ix), "--vectors", str(work / "q.npy"), "-k", str(K), "--json",
                                 *extra]))
        I = _cli_ids(r.pop("stdout"), len(truth))
        r.update(recall_at_10=recall(I, truth), all_hits=bool((I >= 0).all()))
        out[key] = r
    for r in out.values():
        if isinstance(r, dict):
            r.pop("stdout", None)
    return out


class StepFailed(SystemExit):
    """A clipdex step failed: the run stops with its stderr and saves nothing (a result without clipdex's figures
    would read as a run that measured them)."""


def checked(step: dict) -> dict:
    """``step`` (``run_watched``'s) when its command exited 0; otherwise stop the benchmark (non-zero exit)."""
    if step["rc"] != 0:
        raise StepFailed(f"clipdex step failed (exit {step['rc']}): {step['cmd']}\n{step['stderr_tail']}")
    return step


def _cli_ids(stdout: str, q: int) -> np.ndarray:
    """JSON lines of ``clipdex search --json`` -> (q, K) ids (the hits' ``id``, by their ``query``)."""
    I = np.full((q, K), -1, np.int64)
    fill = np.zeros(q, int)
    for line in stdout.splitlines():
        try:
            hit = json.loads(line)
        except ValueError:
            continue
        j = int(hit.get("query", 0))
        if fill[j] < K and "id" in hit:
            I[j, fill[j]] = int(hit["id"])
            fill[j] += 1
    return I


def evict(folder: Path) -> None:
    for f in Path(folder).rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def worker(method: str, work: Path, memory: int) -> dict:
    """One method in this process (called through ``--worker``): its figures."""
    from benchmarks import ann_10m_peers as peers

    xq = np.load(work / "q.npy")
    gt, gtf = np.load(work / "gt.npy"), np.load(work / "gt_bucket7.npy")
    return peers.METHODS[method](work, xq, gt, gtf, memory)


def run_method(method: str, work: Path, memory: int, peer_python: str | None = None,
               build_limit: float | None = None) -> dict:
    """One method's figures from its own process (RssAnon sampled); a peer that needs numpy<2 (autofaiss,
    diskannpy) runs under ``peer_python``, the interpreter of a venv of its own, when given."""
    if method in ("autofaiss", "diskann") and peer_python:
        cmd = [peer_python, str(Path(__file__).with_name(f"ann_peer_{method}.py"))]
        if method == "diskann" and build_limit:
            cmd += ["--build-limit", str(build_limit)]
    else:
        cmd = [sys.executable, __file__, "--worker", method]
    r = run_watched([*cmd, "--work", str(work), "--memory-bytes", str(memory)])
    try:
        res = json.loads(r["stdout"].strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {"error": r["stderr_tail"][-500:]}
    res.update(peak_rss_anon=r["peak_rss_anon"], seconds=r["seconds"], memory_series=r["memory_series"])
    if method == "clipdex" and (r["rc"] != 0 or "error" in res):
        raise StepFailed(f"clipdex's search worker failed (exit {r['rc']}):\n{r['stderr_tail']}")
    return res


def merged(res: dict, path: Path) -> dict:
    """``res`` with the methods, clipdex's CLI steps and any other keys (notes such as ``runs``) of the result at
    ``path`` that it does not measure."""
    if not path.exists():
        return res
    old = json.loads(path.read_text())
    if old.get("rows") != res["rows"]:
        return res
    res["methods"] = {**{m: r for m, r in old.get("methods", {}).items() if m not in res["methods"]},
                      **res["methods"]}
    for key, value in old.items():
        res.setdefault(key, value)
    return res


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, r in res["methods"].items():
        pts = r.get("sweep") or []
        if pts:
            a.plot([p["recall_at_10"] for p in pts], [p["qps"] for p in pts], "o-", label=name)
        series = r.get("memory_series") or []
        if series:
            b.plot([t for t, _ in series], [m / 2**30 for _, m in series], label=name)
    for step in ("import", "optimize"):
        series = res.get("clipdex_cli", {}).get(step, {}).get("memory_series") or []
        b.plot([t for t, _ in series], [m / 2**30 for _, m in series], "--", label=f"clipdex {step}")
    a.set(xlabel="recall@10 (fresh text-like queries)", ylabel="batch QPS", yscale="log",
          title=f"{res['rows']:,} x 512, memory {res['memory_bytes'] / 2**30:.2f} GiB")
    b.set(xlabel="seconds", ylabel="RssAnon GiB", title="anonymous memory over time")
    a.axvline(0.95, color="grey", lw=0.5)
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--work", type=Path, default=Path("/work/cache/scale"))
    ap.add_argument("--memory", default=None, help="the budget (default 3G scaled to --rows: ~322 bytes a row)")
    ap.add_argument("--methods", default="clipdex,faiss_ivfpq_fs,lancedb_ivf_pq,autofaiss,diskann")
    ap.add_argument("--keep", action="store_true", help="keep the data and indexes (deleted by default)")
    ap.add_argument("--reuse", action="store_true", help="reuse the data a --keep run left in --work (clipdex's "
                    "index is rebuilt; peers' copies too)")
    ap.add_argument("--merge", action="store_true", help="keep the methods of the existing result file that this "
                    "run does not measure (each method's figures record the command that measured them)")
    ap.add_argument("--peer-python", help="the python of a venv holding numpy<2 and autofaiss "
                    "(benchmarks/ann_peer_autofaiss.py); without it autofaiss is recorded as absent")
    ap.add_argument("--diskann-build-limit", type=float, help="seconds the DiskANN peer may build for (4 h by "
                    "default); past them it is recorded as not built in that time")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--memory-bytes", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.work, args.memory_bytes)))
        return
    memory = args.memory or f"{max(64, round(3 * 1024 * args.rows / 10_000_000))}M"
    from retrieval.ann.plan import parse_memory

    work = args.work / f"ann_{args.rows}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        reused = args.reuse and all((work / f).exists() for f in ("gt.npy", "gt_bucket7.npy", "q.npy", "src"))
        data = {"rows": args.rows, "raw_float32_bytes": args.rows * DIM * 4, "raw_float16_bytes": args.rows * DIM * 2}
        res = {"rows": args.rows, "memory": memory, "memory_bytes": parse_memory(memory),
               **(data if reused else prepare(work, args.rows))}
        res["prepare_seconds"] = None if reused else round(time.perf_counter() - t0, 1)
        methods = [m for m in args.methods.split(",") if m]
        for method, folder in (("clipdex", "ix.clipdex"), ("lancedb_ivf_pq", "lancedb_peer")):
            if method in methods:  # a kept run's copy: built again
                shutil.rmtree(work / folder, ignore_errors=True)
        if "clipdex" in methods:
            res["clipdex_cli"] = clipdex_cli(work, memory, scaled=args.rows != 10_000_000)
            evict(work / "ix.clipdex")
        res["methods"] = {m: run_method(m, work, res["memory_bytes"], args.peer_python, args.diskann_build_limit)
                          for m in methods}
        stamp = {"command": " ".join(["python", *sys.argv]), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime())}
        for r in res["methods"].values():
            r["measured_by"] = stamp
        name = "ann_10m" if args.rows == 10_000_000 else f"ann_{args.rows}"
        if args.merge:
            res = merged(res, RESULTS / f"{name}.json")
        path = save_result(res, name=name)
        plot(res, path.with_suffix(".png"))
        print(path)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

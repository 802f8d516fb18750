"""``clipdex serve`` on the index ``benchmarks/ann_10m.py --keep`` leaves: memory, cold start and latency at scale.

    python benchmarks/ann_10m.py --rows 10000000 --work DIR --keep     # builds DIR/ann_10000000/ix.clipdex
    python benchmarks/serve_scale.py --work DIR/ann_10000000

Issue 21's serve goal: the service on the 10M index stays within the search budget (3 GiB of anonymous memory)
and answers at p50 <= 50 ms. The index files are evicted from the page cache first (``posix_fadvise(DONTNEED)``),
then ``clipdex serve IX`` starts on 127.0.0.1 as ``benchmarks/serve_load.py`` starts it, its RssAnon sampled from
/proc every 0.2 s once it answers ``/healthz`` (pages of memory-mapped files are cache, not counted). Measured over
HTTP with the fresh queries of the run (``q.npy``, vectors sent as ``POST /api/search {"vector": ...}``):
- start: seconds until ``/healthz`` answers; cold first query: the first search's latency after the start;
- warm single-query p50 / p99 (200 queries one after another), recall@10 of the answers against the exact top-10
  (``gt.npy``), and the same with ``where: bucket = 7`` (1% of rows) against ``gt_bucket7.npy``;
- throughput: all the queries sent by 8 client threads (keep-alive connections);
- peak RssAnon of the server process over the whole run.

Results: ``benchmarks/results/serve_<rows>.json``.
"""
from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.ann_10m import K, evict, recall, rss_anon  # noqa: E402
from benchmarks.results_io import save_result  # noqa: E402
from benchmarks.serve_load import free_port, start_server  # noqa: E402


class Client:
    """One keep-alive HTTP connection to the service."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def search(self, q: np.ndarray, where: str | None = None) -> tuple[float, list[int]]:
        body = {"vector": [float(v) for v in q], "k": K, **({"where": where} if where else {})}
        t0 = time.perf_counter()
        self.conn.request("POST", "/api/search", json.dumps(body), {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        took = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"search answered {resp.status}: {data[:300]!r}")
        return took, [int(r["id"]) for r in json.loads(data)["results"]]


def ids(rows: list[list[int]]) -> np.ndarray:
    out = np.full((len(rows), K), -1, np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r[:K])] = r[:K]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="a kept ann_10m run's folder (ix.clipdex, q.npy, gt.npy)")
    ap.add_argument("--single", type=int, default=200, help="queries sent one after another")
    ap.add_argument("--threads", type=int, default=8)
    a = ap.parse_args()
    ix, xq = a.work / "ix.clipdex", np.load(a.work / "q.npy")
    gt, gtf = np.load(a.work / "gt.npy"), np.load(a.work / "gt_bucket7.npy")
    evict(ix)
    port = free_port()
    t0 = time.perf_counter()
    proc = start_server(ix, port, threads=4)   # as serve_load starts it; returns once /healthz answers
    series: list[tuple[float, int]] = []
    done = threading.Event()

    def sample():
        while not done.is_set() and proc.poll() is None:
            series.append((round(time.perf_counter() - t0, 2), rss_anon(proc.pid)))
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    out: dict = {"index": str(ix), "start_s": round(time.perf_counter() - t0, 2)}
    try:
        client = Client(port)
        took, _ = client.search(xq[0])
        out["cold_first_query_s"] = round(took, 3)
        for key, where, truth in (("search", None, gt), ("search_bucket7", "bucket = 7", gtf)):
            times, got = [], []
            for q in xq[:a.single]:
                t, r = client.search(q, where)
                times.append(t)
                got.append(r)
            I = ids(got)
            out[key] = {"queries": a.single, "p50_ms": round(float(np.median(times)) * 1000, 2),
                        "p99_ms": round(float(np.percentile(times, 99)) * 1000, 2),
                        "recall_at_10": recall(I, truth[:a.single]), "all_k": bool((I >= 0).all())}
        local = threading.local()

        def one(i: int) -> float:
            if not hasattr(local, "c"):   # a connection per client thread
                local.c = Client(port)
            return local.c.search(xq[i])[0]

        t1 = time.perf_counter()
        with ThreadPoolExecutor(a.threads) as pool:
            lat = list(pool.map(one, range(len(xq))))
        wall = time.perf_counter() - t1
        out["throughput"] = {"queries": len(xq), "threads": a.threads, "qps": round(len(xq) / wall, 1),
                             "p50_ms": round(float(np.median(lat)) * 1000, 2)}
    finally:
        done.set()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    out["peak_rss_anon"] = max((m for _, m in series), default=0)
    out["memory_series"] = series[:: max(1, len(series) // 300)]
    rows = int(a.work.name.split("_")[-1])   # ann_<rows>
    print(json.dumps({k: v for k, v in out.items() if k != "memory_series"}, indent=1))
    print(f"wrote {save_result({'rows': rows, **out}, name=f'serve_{rows}')}")


if __name__ == "__main__":
    main()

"""Load benchmark of ``clipdex serve`` on loopback: latency and throughput at several concurrencies.

    python benchmarks/serve_load.py [--index PATH | --images 10000] [--model clipdex-tiny] [--requests 2000]
                                    [--concurrency 1,4,16] [--k 10] [--out benchmarks/results]

Without ``--index``, an index of ``--images`` rows is written through the raw-vector API with ``--model``'s
dimension (random unit vectors, so search cost is that of a real index of that size; no files are needed since
the benchmark asks for no thumbnails). The server runs as ``clipdex serve`` in a subprocess on 127.0.0.1; the
client sends ``--requests`` text searches (all different, so nothing is cached) at each concurrency with httpx.
The in-process baseline is the same queries through ``retrieval.query.search.search`` with the model loaded once
(encode + search). Reports p50 / p99 latency, QPS and errors (must be 0) and the issue's two goals:
served p50 at concurrency 1 <= 1.3 x in-process p50, and QPS at concurrency 16 >= 2 x QPS at concurrency 1.
Writes <out>/serve_load.json. Loopback only, every loop bounded.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

from retrieval.encode.encoder import load_encoder  # noqa: E402
from retrieval.index.directory import create_index, open_index  # noqa: E402
from retrieval.query.search import search  # noqa: E402

WORDS = ("red", "green", "blue", "small", "large", "round", "square", "striped", "bright", "dark", "old", "new")
NOUNS = ("circle", "square", "star", "triangle", "dog", "cat", "car", "tree", "house", "boat", "bird", "flower")


def queries(n: int) -> list[str]:
    """n different short captions."""
    return [f"a {WORDS[i % 12]} {NOUNS[(i // 12) % 12]} number {i}" for i in range(n)]


def build(path: Path, n: int, model: str, seed: int = 0) -> None:
    dim = load_encoder(model, device="cpu").dim
    rng = np.random.default_rng(seed)
    with create_index(path, dim=dim, model=model) as ix:
        for start in range(0, n, 5000):
            b = min(5000, n - start)
            x = rng.standard_normal((b, dim)).astype(np.float32)
            ix.add_vectors("images", x, {"path": [f"/nonexistent/img_{start + i}.jpg" for i in range(b)]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, port: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", str(index), "--port", str(port),
                             "--workers-threads", str(threads), "--device", "cpu"], env=env, cwd=ROOT)
    import httpx

    for _ in range(1200):                         # bounded: up to 120 s for the model to load
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the server did not start within 120 s")


async def load(url: str, texts: list[str], concurrency: int, k: int) -> dict:
    """Send every text once with ``concurrency`` requests in flight -> latency percentiles, QPS, errors."""
    import httpx

    latencies: list[float] = []
    errors = 0
    it = iter(texts)

    async def worker(client):
        nonlocal errors
        for text in it:
            t0 = time.perf_counter()
            try:
                r = await client.post(url, json={"text": text, "k": k})
                ok = r.status_code == 200 and len(r.json()["results"]) == k
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            errors += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(texts), "errors": errors, "qps": round(len(texts) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def in_process(index: Path, texts: list[str], k: int) -> dict:
    ix = open_index(index)
    enc = ix.encoder(device="cpu")
    for t in texts[:5]:
        search(ix, t, k=k, encoder=enc)
    ms = []
    for t in texts:
        t0 = time.perf_counter()
        search(ix, t, k=k, encoder=enc)
        ms.append((time.perf_counter() - t0) * 1000)
    ix.close()
    return {"requests": len(texts), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--model", default="clipdex-tiny")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        index = args.index
        if index is None:
            index = Path(tmp) / "bench.clipdex"
            build(index, args.images, args.model)
        base = in_process(index, queries(min(args.requests, 500)), args.k)
        port = free_port()
        proc = start_server(index, port, args.threads)
        try:
            url = f"http://127.0.0.1:{port}/api/search"
            asyncio.run(load(url, queries(20), 1, args.k))          # warm-up
            runs = [asyncio.run(load(url, queries(args.requests), c, args.k)) for c in levels]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    by_c = {r["concurrency"]: r for r in runs}
    goals = {}
    if 1 in by_c:
        goals["served_p50_over_in_process_p50"] = round(by_c[1]["p50_ms"] / base["p50_ms"], 3)
    if 1 in by_c and 16 in by_c:
        goals["qps16_over_qps1"] = round(by_c[16]["qps"] / by_c[1]["qps"], 3)
    out = {"index": str(args.index or f"{args.images} random rows"), "model": args.model, "k": args.k,
           "threads": args.threads, "in_process": base, "served": runs, "goals": goals}
    save_result(out, args.out / "serve_load.json")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""The running service: the served indexes, one batcher per model, the search threads, metrics.

``Service.search`` is the one path every search route takes (clipdex's API, the clip-retrieval routes, the page):
check the request, build the query vector (batched encoding), search off the event loop under a timeout. Past
the timeout the request's blocking work is cancelled (``clipdex.serve.jobs``), so it stops holding a search thread.
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np

from clipdex.serve.batcher import Batcher
from clipdex.serve.config import ServeConfig
from clipdex.serve.jobs import Jobs
from clipdex.serve.queries import (
    SearchRequest,
    check_request,
    decode_base64_image,
    decode_image,
    encode_batch,
    query_vector,
    run_search,
)
from clipdex.serve.registry import Registry
from retrieval.errors import ClipdexError
from retrieval.index.query_cache import remember_queries

log = logging.getLogger(__name__)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STOP_WAIT = 2.0   # seconds a stopping service waits for its cancelled requests' threads to come back
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"})


class QueryTimeout(ClipdexError):
    """A search ran past the service's query timeout (answered with 504)."""


class Metrics:
    """Request counts by route and status, and a latency histogram per route (Prometheus text format)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list] = {}   # route -> [bucket counts..., sum, count]

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request; a method outside HTTP's own is counted as "other" (a client can make up any
        number of them: one series each would grow without bound). ``route`` is a route's template, or "other"."""
        method = method if method in METHODS else "other"
        with self._lock:
            key = (method, route, status)
            self.counts[key] = self.counts.get(key, 0) + 1
            h = self.latency.setdefault(route, [0] * len(BUCKETS) + [0.0, 0])
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def render(self, extra: dict[str, float]) -> str:
        lines = ["# HELP clipdex_requests_total HTTP requests by route and status",
                 "# TYPE clipdex_requests_total counter"]
        with self._lock:
            for (method, route, status), n in sorted(self.counts.items()):
                lines.append(f'clipdex_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}')
            lines += ["# HELP clipdex_request_seconds request latency by route",
                      "# TYPE clipdex_request_seconds histogram"]
            for route, h in sorted(self.latency.items()):
                for b, n in zip(BUCKETS, h):
                    lines.append(f'clipdex_request_seconds_bucket{{route="{route}",le="{b}"}} {n}')
                lines.append(f'clipdex_request_seconds_bucket{{route="{route}",le="+Inf"}} {h[-1]}')
                lines.append(f'clipdex_request_seconds_sum{{route="{route}"}} {h[-2]:.6f}')
                lines.append(f'clipdex_request_seconds_count{{route="{route}"}} {h[-1]}')
        for name, v in extra.items():
            lines += [f"# TYPE {name} counter", f"{name} {v}"]
        return "\n".join(lines) + "\n"


class Service:
    def __init__(self, config: ServeConfig):
        self.config = config
        # a snapshot swapped out is closed once no request can still hold it: past the query timeout, with margin
        self.registry = Registry(config.indexes, device=config.device, grace=2 * config.query_timeout + 5)
        self._stopping = threading.Event()
        self._refresher: threading.Thread | None = None
        self.jobs = Jobs(config.threads)
        self.pool = self.jobs.pool
        self.metrics = Metrics()
        self.batchers: list[Batcher] = []
        self._served: dict[str, list] = {}  # index name -> query vectors not yet in its cache
        self._served_lock = threading.Lock()

    def start(self) -> None:
        """Blocking: open every index and load each model once (run at start-up, before serving)."""
        self.registry.open()
        by_encoder: dict[int, Batcher] = {}
        for served in self.registry.items.values():
            if served.encoder is None:
                continue
            key = id(served.encoder)
            if key not in by_encoder:
                by_encoder[key] = Batcher(encode_batch(served), self.config.batch_size, self.config.batch_wait_ms,
                                          name=served.name)
            served.batcher = by_encoder[key]
        self.batchers = list(by_encoder.values())
        if self.config.refresh_seconds > 0:
            self._refresher = threading.Thread(target=self._refresh_loop, name="clipdex-refresh", daemon=True)
            self._refresher.start()

    def _refresh_loop(self) -> None:
        """Serve what is committed: every ``refresh_seconds``, open again the indexes that changed on disk."""
        while not self._stopping.wait(self.config.refresh_seconds):
            try:
                self.registry.refresh()
            except Exception:  # a refresh that fails keeps the current snapshots; the next tick tries again
                log.exception("refreshing the served indexes failed")

    def stop(self) -> None:
        self._stopping.set()
        if self._refresher is not None:
            self._refresher.join(timeout=10)
        for b in self.batchers:
            b.close()
        if not self.jobs.stop(wait=STOP_WAIT):   # cancels the requests in flight: stopping never waits on them
            log.warning("search threads still busy after %g s; leaving the indexes open", STOP_WAIT)
            return
        for name in list(self._served):
            self._keep_queries(name, flush=True)
        self.registry.close()

    def _keep_queries(self, name: str, q=None, flush: bool = False) -> None:
        """Keep served query vectors in the index's cache for the next ``optimize`` to tune on: real queries, across
        whatever modality gap they have (``flush``: write what is buffered now)."""
        batch = self._take_queries(name, q, flush)
        if batch:
            self._write_queries(name, batch)

    def _take_queries(self, name: str, q=None, flush: bool = False, every: int = 64) -> list | None:
        """Buffer ``q`` (1, d); the buffered vectors once there are ``every`` of them (or on ``flush``), else None.
        Cheap: the search path calls it inline and hands only a full batch to a search thread."""
        with self._served_lock:
            buf = self._served.setdefault(name, [])
            if q is not None:
                buf.append(q)
            if not buf or (len(buf) < every and not flush):
                return None
            batch, self._served[name] = buf, []
        return batch

    def _write_queries(self, name: str, batch: list) -> None:
        """Append a batch to the cache; one that cannot be written (a read-only index folder) is only a lost hint."""
        try:
            remember_queries(self.registry.get(name).index.path, np.concatenate(batch), "served")
        except (OSError, ClipdexError):
            pass

    async def run(self, fn, *args):
        """Run blocking work (search, decoding, file reads) on the search threads, cancelled with its request."""
        return await self.jobs.run(fn, *args)

    async def bounded(self, coro, what: str, hint: str):
        """Await a request's work under the query timeout: past it, the work is cancelled and a 504 answers."""
        timeout = self.config.query_timeout
        return await self.jobs.within(coro, timeout, lambda: QueryTimeout(
            f"the {what} took longer than {timeout:g} s; {hint} or try again"))

    async def search(self, req: SearchRequest, image=None, image_bytes: bytes | None = None) -> dict:
        """The one search path: -> {index, table, k, offset, results, elapsed_ms}. ``image`` a PIL image, or
        ``image_bytes`` to decode here (size limit, bomb guard)."""
        served = self.registry.get(req.index)
        check_request(served, req, image is not None or image_bytes is not None or bool(req.image))
        return await self.bounded(self._search(served, req, image, image_bytes), "search",
                                  "narrow it (smaller k, a filter)")

    async def _search(self, served, req: SearchRequest, image, image_bytes) -> dict:
        t0 = time.perf_counter()
        if image is None and (image_bytes is not None or req.image):
            data = image_bytes if image_bytes is not None else decode_base64_image(req.image, self.config.max_upload)
            image = await self.run(decode_image, data, self.config.max_upload, self.config.max_pixels)
        q = await query_vector(served, req, image, self.run)
        results = await self.run(run_search, served, req, q)
        batch = self._take_queries(served.name, q.reshape(1, -1)) if req.table == "images" else None
        if batch:
            await self.run(self._write_queries, served.name, batch)
        return {"index": served.name, "table": req.table, "k": req.k, "offset": req.offset, "results": results,
                "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3)}

    def counters(self) -> dict[str, float]:
        return {"clipdex_encode_batches_total": sum(b.batches for b in self.batchers),
                "clipdex_encoded_items_total": sum(b.items for b in self.batchers)}


"""The search threads, where every request's blocking work runs, cancellable.

Each request's work runs under a ``retrieval.cancel.CancelToken``: ``within(coro, timeout)`` gives the request one
token and a deadline; past it, or when the request's task is cancelled (uvicorn's shutdown, a client gone), the
token is cancelled and the library's long loops (encoding batches, exact-search blocks, video stages) stop at their
next checkpoint, so a request that timed out stops holding a search thread. A job still queued when its request
gives up never starts. ``stop`` cancels every job and waits a bounded time for the threads to come back.
"""
from __future__ import annotations

import asyncio
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar

from retrieval.cancel import CancelToken

_request: ContextVar[CancelToken | None] = ContextVar("clipdex_request_token", default=None)


class Jobs:
    def __init__(self, threads: int):
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="clipdex-search")
        self._tokens: weakref.WeakSet = weakref.WeakSet()   # every token with work queued or running
        self._lock = threading.Condition()
        self.running = 0

    async def run(self, fn, *args):
        """``fn(*args)`` on a search thread under the request's token (a token of its own outside a request);
        the token is cancelled if the caller stops waiting."""
        token = _request.get() or CancelToken()
        with self._lock:
            self._tokens.add(token)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self._job, token, fn, args)
        except asyncio.CancelledError:
            token.cancel("the request was cancelled")
            raise

    def _job(self, token: CancelToken, fn, args):
        with self._lock:
            self.running += 1
        try:
            return token.run(fn, *args)
        finally:
            with self._lock:
                self.running -= 1
                self._lock.notify_all()

    async def within(self, coro, timeout: float, on_timeout):
        """Await ``coro`` (which calls ``run``) with one token for all its jobs and a deadline: past ``timeout``
        seconds its jobs are cancelled and ``on_timeout()`` (an exception) is raised."""
        token = CancelToken()
        reset = _request.set(token)   # the task wait_for makes copies this context: its jobs share the token
        try:
            return await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            token.cancel("the request timed out")
            raise on_timeout() from None
        except asyncio.CancelledError:
            token.cancel("the request was cancelled")
            raise
        finally:
            _request.reset(reset)

    def stop(self, wait: float) -> bool:
        """Cancel every job, drop the queued ones and wait up to ``wait`` seconds for the running ones to stop;
        -> whether they did (a job inside one long native call finishes that call first)."""
        with self._lock:
            tokens = list(self._tokens)
        for token in tokens:
            token.cancel("the service is stopping")
        self.pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + wait
        with self._lock:
            return self._lock.wait_for(lambda: self.running == 0, timeout=max(0.0, deadline - time.monotonic()))

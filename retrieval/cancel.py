"""Cooperative cancellation: long loops call :func:`checkpoint` between blocks, and work run under a cancelled
:class:`CancelToken` stops there with :class:`Cancelled`.

    token = CancelToken()
    pool.submit(token.run, work, *args)   # ``work`` and everything it calls sees ``token`` as current
    token.cancel("the request timed out")  # from any thread: ``work`` raises Cancelled at its next checkpoint

The current token lives in a context variable, so it belongs to the thread (or asyncio task) that runs the work;
code run without one (the CLI, notebooks) never stops at a checkpoint, and a checkpoint costs one lookup. One
native call (a FAISS search, a Lance query, a model forward) is not interrupted: the work stops after it.
"""
from __future__ import annotations

import threading
from contextvars import ContextVar

from retrieval.errors import ClipdexError

_current: ContextVar["CancelToken | None"] = ContextVar("clipdex_cancel_token", default=None)


class Cancelled(ClipdexError):
    """The work was cancelled (its request timed out or went away, or the service is stopping)."""


class CancelToken:
    """A flag one side sets (``cancel``) and the work checks (``check``, or any ``checkpoint`` it runs)."""

    def __init__(self):
        self._event = threading.Event()
        self.reason = "cancelled"

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled(self.reason)

    def run(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` with this token current (not started at all once cancelled)."""
        self.check()
        reset = _current.set(self)
        try:
            return fn(*args, **kwargs)
        finally:
            _current.reset(reset)


def current() -> CancelToken | None:
    """The token the running work was started under, if any."""
    return _current.get()


def checkpoint() -> None:
    """Raise :class:`Cancelled` when the running work's token was cancelled; else nothing (cheap)."""
    token = _current.get()
    if token is not None:
        token.check()

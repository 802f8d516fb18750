"""A small dynamic batcher: queries that arrive together are encoded in one model call, on one dedicated thread.

``await batcher.encode("text", "a red circle")`` queues the item. While the model is idle a batch leaves after
``wait_ms`` (default 0: at the next turn of the event loop, so a lone query pays no wait); while it is busy,
arriving items queue up and leave together as soon as it is free, up to ``max_batch`` per round. Under load the
batches grow by themselves; at concurrency 1 nothing waits. A round runs ``encode_batch(kind, items) -> (n, d)``
on the batcher's own single-thread executor (the encoder holds its model lock and runs under
``torch.inference_mode``), one call per kind ("text:<strategy>", "image") present in the round. An item that
fails to encode fails alone: the batch is retried item by item so one bad image cannot fail its neighbours.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)


class Batcher:
    def __init__(self, encode_batch: Callable[[str, Sequence], np.ndarray], max_batch: int = 32,
                 wait_ms: float = 0.0, name: str = "encode"):
        self.encode_batch = encode_batch
        self.max_batch = max_batch
        self.wait = wait_ms / 1000.0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"clipdex-{name}")
        self._pending: list[tuple[str, object, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self.batches = 0            # rounds sent to the model
        self.items = 0              # items encoded

    async def encode(self, kind: str, item) -> np.ndarray:
        """One text or image -> its (d,) unit vector, encoded together with whatever else is queued."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((kind, item, fut))
        if not self._busy and self._timer is None:
            self._timer = loop.call_later(self.wait, self._flush)
        return await fut

    def _flush(self) -> None:
        self._timer = None
        if self._busy or not self._pending:
            return
        batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        self._busy = True
        asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list) -> None:
        try:
            by_kind: dict[str, list] = {}
            for kind, item, fut in batch:
                by_kind.setdefault(kind, []).append((item, fut))
            self.batches += 1
            for kind, entries in by_kind.items():
                try:
                    out = await self._call(kind, [e[0] for e in entries])
                except Exception as exc:
                    if len(entries) == 1:
                        _settle(entries[0][1], exc=exc)
                    else:
                        await self._one_by_one(kind, entries)
                    continue
                self.items += len(entries)
                for (_, fut), vec in zip(entries, out):
                    _settle(fut, vec)
        finally:
            self._busy = False
            if self._pending:      # what arrived meanwhile leaves now, together
                self._flush()

    async def _one_by_one(self, kind: str, entries: list) -> None:
        """A batch failed: encode each item alone, so only the bad ones fail."""
        for item, fut in entries:
            try:
                _settle(fut, (await self._call(kind, [item]))[0])
                self.items += 1
            except Exception as exc:
                _settle(fut, exc=exc)

    async def _call(self, kind: str, items: list) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.encode_batch, kind, items)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _settle(fut: asyncio.Future, value=None, exc: BaseException | None = None) -> None:
    if fut.done():          # the request gave up (timeout, client gone)
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)

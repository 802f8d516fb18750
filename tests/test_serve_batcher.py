"""The dynamic batcher: queries that arrive together share one model call, a lone query does not wait, what
queues while the model is busy leaves together, and a bad item fails alone."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")

from clipdex.serve.batcher import Batcher  # noqa: E402


class Recorder:
    """An encode_batch that records each call and refuses the item "bad"."""

    def __init__(self):
        self.calls: list[tuple[str, list]] = []

    def __call__(self, kind, items):
        self.calls.append((kind, list(items)))
        if "bad" in items:
            raise ValueError("cannot encode 'bad'")
        return np.array([[len(str(x)), 1.0 if kind == "image" else 0.0] for x in items], np.float32)


def run(coro):
    return asyncio.run(coro)


def test_items_that_arrive_together_are_encoded_in_one_call_per_kind():
    rec = Recorder()

    async def main():
        b = Batcher(rec, max_batch=32, wait_ms=50)
        texts = [b.encode("text", "x" * n) for n in range(1, 9)]
        images = [b.encode("image", "img" + str(n)) for n in range(3)]
        out = await asyncio.gather(*texts, *images)
        b.close()
        return out, b

    out, b = run(main())
    assert sorted(len(items) for _, items in rec.calls) == [3, 8] and b.batches == 1 and b.items == 11
    assert [v[0] for v in out[:8]] == list(range(1, 9)) and all(v[1] == 1.0 for v in out[8:])


def test_items_arriving_while_the_model_is_busy_leave_together_in_rounds_of_max_batch():
    rec = Recorder()
    gate = threading.Event()

    def slow(kind, items):          # the first round holds the model until the rest has queued
        if not rec.calls:
            gate.wait(30)
        return rec(kind, items)

    async def main():
        b = Batcher(slow, max_batch=4, wait_ms=0)
        first = asyncio.ensure_future(b.encode("text", "first"))
        await asyncio.sleep(0.01)       # the first round is now in the executor
        rest = [asyncio.ensure_future(b.encode("text", str(n))) for n in range(6)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, *rest)
        b.close()

    run(main())
    assert [len(items) for _, items in rec.calls] == [1, 4, 2]


def test_a_lone_query_does_not_wait_for_company():
    rec = Recorder()

    async def main():
        b = Batcher(rec, max_batch=32, wait_ms=0)
        v = await b.encode("text", "alone")
        b.close()
        return v

    assert run(main())[0] == 5 and rec.calls == [("text", ["alone"])]


def test_one_bad_item_fails_alone_and_its_neighbours_get_their_vectors():
    rec = Recorder()

    async def main():
        b = Batcher(rec, max_batch=32, wait_ms=20)
        jobs = [b.encode("text", t) for t in ("ok", "bad", "fine")]
        out = await asyncio.gather(*jobs, return_exceptions=True)
        b.close()
        return out

    ok, bad, fine = run(main())
    assert isinstance(bad, ValueError) and ok[0] == 2 and fine[0] == 4


def test_text_and_image_searches_in_flight_together_share_one_round_through_the_app(tmp_path, shapes_dir):
    """Through the ASGI app: while the model is held by a first query, 7 text and 4 image searches queue up and
    leave as one round (one call per kind); each still gets its own, correct results."""
    httpx = pytest.importorskip("httpx")
    import base64

    from clipdex.serve.app import create_app
    from clipdex.serve.config import ServeConfig
    from clipdex.serve.service import Service
    from tests.serve_helpers import build_photo_index

    idx, photos = build_photo_index(tmp_path, shapes_dir)
    config = ServeConfig(indexes=[str(idx)], cache_dir=tmp_path / "cache").check()
    svc = Service(config)
    svc.start()
    batcher = svc.batchers[0]
    inner, calls, gate = batcher.encode_batch, [], threading.Event()

    def held(kind, items):
        calls.append((kind.split(":")[0], len(items)))
        if len(calls) == 1:
            gate.wait(30)
        return inner(kind, items)

    batcher.encode_batch = held
    app = create_app(config, svc)
    files = sorted(photos.rglob("*.png"))[:4]
    images = [base64.b64encode(p.read_bytes()).decode() for p in files]

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            first = asyncio.ensure_future(c.post("/api/search", json={"text": "first", "k": 1}))
            for _ in range(2000):               # bounded: until the first query holds the model
                if calls:
                    break
                await asyncio.sleep(0.001)
            rest = [asyncio.ensure_future(c.post("/api/search", json={"text": f"query {i}", "k": 1}))
                    for i in range(7)]
            rest += [asyncio.ensure_future(c.post("/api/search", json={"image": b, "k": 1})) for b in images]
            for _ in range(2000):               # bounded: until all eleven wait behind it
                if len(batcher._pending) == 11:
                    break
                await asyncio.sleep(0.001)
            gate.set()
            return await first, await asyncio.gather(*rest)

    try:
        first, rest = asyncio.run(main())
    finally:
        svc.stop()
    assert first.status_code == 200 and all(r.status_code == 200 for r in rest)
    assert sorted(calls) == [("image", 4), ("text", 1), ("text", 7)] and batcher.batches == 2
    assert [r.json()["results"][0]["path"] for r in rest[7:]] == [str(p) for p in files]

"""A request that times out stops consuming the search threads; classification is bounded; SIGTERM stops the
server with long requests in flight (issue 19, items 8, 10 and 17).

The heavy jobs are real loops of the library (the classifier's prompt batches through the model, ``exact_search``
over blocks) made long by a hook that counts their iterations: a test asserts the loop stopped once its request was
cancelled and that a later request got the thread, never a duration.
"""
from __future__ import annotations

import base64
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from retrieval.ann.exact import exact_search  # noqa: E402
from retrieval.cancel import current  # noqa: E402
from retrieval.store.base import arrow_to_vectors  # noqa: E402
from tests.serve_helpers import build_photo_index, client, start_server  # noqa: E402


@pytest.fixture(scope="module")
def photos_index(tmp_path_factory, shapes_dir):
    return build_photo_index(tmp_path_factory.mktemp("cancel"), shapes_dir)


@pytest.fixture(scope="module")
def served(photos_index, tmp_path_factory):
    idx, photos = photos_index
    with client(idx, tmp_path_factory.mktemp("limits")) as c:
        yield c, idx, photos


def image_b64(photos) -> str:
    return base64.b64encode((photos / "square" / "green_1.png").read_bytes()).decode()


def wait_idle(svc, seconds: float = 30.0) -> bool:
    """Bounded: until no job runs on the search threads."""
    end = time.monotonic() + seconds
    while svc.jobs.running and time.monotonic() < end:
        time.sleep(0.05)
    return svc.jobs.running == 0


class Counting:
    """Wraps a loop's step: counts the calls, and those made after the job's token was cancelled."""

    def __init__(self, fn, pause: float = 0.0):
        self.fn, self.pause = fn, pause
        self.calls = self.after_cancel = 0
        self.release = threading.Event()   # the test's own stop, so that a loop that ignores cancellation ends

    def __call__(self, *args, **kwargs):
        token = current()
        self.calls += 1
        self.after_cancel += bool(token is not None and token.cancelled)
        if self.release.is_set():
            raise RuntimeError("released by the test")
        if self.pause:
            time.sleep(self.pause)
        return self.fn(*args, **kwargs)


# -- item 8: the work one classification may ask for is bounded ---------------------------------------------------
def test_classify_refuses_too_many_classes_too_long_names_and_too_much_prompt_work(served):
    c, _, photos = served
    img = image_b64(photos)
    r = c.post("/api/classify", json={"classes": ["circle", "x" * 201], "image": img})
    assert r.status_code == 413 and "201 characters (at most 200)" in r.json()["error"]
    r = c.post("/api/classify", json={"classes": [f"class {i}" for i in range(1001)], "image": img})
    assert r.status_code == 413 and r.json() == {"error": "too many classes: 1,001 (at most 1,000 per request)",
                                                 "status": 413}
    # 600 names of 150 bytes: within the count and the length, but each spans 3 prompt encodings per template
    r = c.post("/api/classify", json={"classes": [f"{i:03d}" + "y" * 147 for i in range(600)], "image": img})
    assert r.status_code == 413 and "prompt encodings (at most 80,000)" in r.json()["error"]
    r = c.post("/api/classify", json={"classes": ["circle", "square"], "image": img})   # within limits: answered
    assert r.status_code == 200 and {x["class"] for x in r.json()["classes"]} == {"circle", "square"}


def test_classify_limits_come_from_the_config(photos_index, tmp_path):
    idx, photos = photos_index
    with client(idx, tmp_path / "cache", max_classes=3, max_class_chars=10, max_prompts=10_000) as c:
        img = image_b64(photos)
        r = c.post("/api/classify", json={"classes": ["a", "b", "c", "d"], "image": img})
        assert r.status_code == 413 and "at most 3 per request" in r.json()["error"]
        r = c.post("/api/classify", json={"classes": ["a", "b" * 11], "image": img})
        assert r.status_code == 413 and "at most 10" in r.json()["error"]


# -- items 8 and 10: past the deadline a classification is cancelled and gives its thread back --------------------
@pytest.mark.slow
def test_a_classification_past_the_deadline_answers_504_stops_encoding_and_frees_the_thread(photos_index, tmp_path):
    idx, photos = photos_index
    with client(idx, tmp_path / "cache", threads=1, query_timeout=1.0, refresh_seconds=0) as c:
        svc = c.app.state.service
        served = svc.registry.get(None)
        model = served.encoder.model
        forward = Counting(model.encode_text)
        model.encode_text = forward   # every prompt batch of the classifier passes here (256 prompts each)
        try:
            classes = [f"thing number {i}" for i in range(600)]   # 48,000 prompts: minutes of work, within limits
            r = c.post("/api/classify", json={"classes": classes, "image": image_b64(photos)})
            assert r.status_code == 504 and "classification took longer than 1 s" in r.json()["error"]
            svc.config.query_timeout = 15.0   # generous for the next request: it only needs the thread back
            r = c.post("/api/search", json={"like_id": 0, "k": 3})
            assert r.status_code == 200 and len(r.json()["results"]) == 3
            assert wait_idle(svc)
            assert forward.calls < 48_000 // 256       # the classifier's batches stopped early
            assert forward.after_cancel <= 1           # at most the batch in flight when it was cancelled
        finally:
            forward.release.set()
            del model.encode_text


# -- item 10: a search past its deadline stops its block loop --------------------------------------------------
def test_a_search_past_the_deadline_stops_its_block_loop_and_frees_the_search_thread(photos_index, tmp_path):
    idx, _ = photos_index
    with client(idx, tmp_path / "cache", threads=1, query_timeout=1.0, refresh_seconds=0) as c:
        svc = c.app.state.service
        store = svc.registry.get(None).index.store
        rows = store.take("images", np.arange(48), ["id", "vector"])
        ids = np.asarray(rows.column("id").to_numpy(), np.int64)
        vecs, _ = arrow_to_vectors(rows.column("vector"), svc.registry.get(None).index.dim)
        step = Counting(lambda i: (ids[i % len(ids)][None], vecs[i % len(ids)][None]), pause=0.02)
        original = store.search

        def heavy_search(table, xq, k, where=None, column="vector", exact=False):
            if k != 7:   # only the heavy request scans block by block: 5,000 one-row blocks, 100 s at least
                return original(table, xq, k, where=where, column=column, exact=exact)
            return exact_search(xq, (step(i) for i in range(5000)), k)

        store.search = heavy_search
        try:
            r = c.post("/api/search", json={"vector": vecs[1].tolist(), "k": 7})   # its one job: the heavy scan
            assert r.status_code == 504 and "search took longer than 1 s" in r.json()["error"]
            svc.config.query_timeout = 15.0
            r = c.post("/api/search", json={"like_id": 1, "k": 3})
            assert r.status_code == 200 and r.json()["results"][0]["id"] == 1
            assert wait_idle(svc)
            assert step.calls < 5000 and step.after_cancel <= 1   # stopped at the block after the cancel
        finally:
            step.release.set()
            del store.search


# -- item 17: SIGTERM stops a real server with a long request in flight ---------------------------------------
@pytest.mark.slow
def test_sigterm_stops_the_server_with_a_long_classification_in_flight(photos_index, tmp_path):
    import httpx

    idx, photos = photos_index
    proc, base = start_server(idx, tmp_path / "cache", "--query-timeout", "600", stdout=subprocess.DEVNULL)
    answered: list = []
    try:
        body = {"classes": [f"thing number {i}" for i in range(1000)], "image": image_b64(photos)}  # the limit

        def classify():
            try:
                answered.append(httpx.post(base + "/api/classify", json=body, timeout=120).status_code)
            except httpx.HTTPError as exc:
                answered.append(type(exc).__name__)

        t = threading.Thread(target=classify, daemon=True)
        t.start()
        time.sleep(2.0)   # the classification is under way (80,000 prompts: it would take minutes)
        assert not answered
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)   # generous: 3 s of grace, then the work is cancelled
        assert rc in (0, -signal.SIGTERM), proc.stderr.read()
        t.join(timeout=10)
        assert answered and answered[0] != 200   # the request was cut short, not run to its end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

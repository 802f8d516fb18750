"""``clipdex serve`` under load on loopback, with a writer indexing new pictures into the served index and hostile
requests mixed in (issue 19's closing check): every answer is a 2xx or a 4xx, never a 5xx; every normal search
answers what it must; the rows the writer committed are served before the end, without a restart.

Bounded: a fixed number of requests per client, each with a timeout; the server and the writer are stopped in
``finally``. Only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import base64
import io
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from clipdex.synthetic.shapes import make_shapes  # noqa: E402
from tests.serve_helpers import build_photo_index, start_server  # noqa: E402

ROUNDS = 12          # each normal client's requests
HOSTILE_ROUNDS = 3   # each hostile request is sent this many times


def _huge_png() -> str:
    """A 20 KB PNG that decodes to 13000 x 13000 pixels."""
    buf = io.BytesIO()
    Image.new("1", (13000, 13000)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _hostile(base: str, huge: str) -> list[tuple[str, dict]]:
    """(name, httpx.request keyword arguments): requests an attacker or a careless client sends."""
    deep = b"[" * 100_000 + b"]" * 100_000
    return [
        ("deep json", {"method": "POST", "url": base + "/api/search", "content": deep,
                       "headers": {"content-type": "application/json"}}),
        ("deep knn-service", {"method": "POST", "url": base + "/knn-service", "content": deep,
                              "headers": {"content-type": "application/json"}}),
        ("40 NOTs", {"method": "POST", "url": base + "/api/search",
                     "json": {"text": "a circle", "where": "NOT " * 40 + "width > 0", "k": 5}}),
        ("too many classes", {"method": "POST", "url": base + "/api/classify",
                              "json": {"classes": [f"class {i}" for i in range(5000)], "image": huge}}),
        ("13000x13000 png", {"method": "POST", "url": base + "/api/search", "json": {"image": huge, "k": 3}}),
        ("id 1e400", {"method": "POST", "url": base + "/api/search", "content": b'{"like_id": 1e400}',
                      "headers": {"content-type": "application/json"}}),
        ("bad base64", {"method": "POST", "url": base + "/api/search", "json": {"image": "%%%not base64%%%"}}),
        ("thumb t=1e308", {"method": "GET", "url": base + "/api/thumb/photos/frames/0?t=1e308"}),
        ("made-up method", {"method": "BREW", "url": base + "/api/search"}),
        ("missing row", {"method": "GET", "url": base + "/api/file/photos/images/999999999"}),
    ]


def _slow_header_client(port: int, seconds: float) -> None:
    """Send half a request's headers, then nothing for ``seconds``: the server must go on answering others."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds + 5) as s:
        s.sendall(b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(seconds)


def _index_more(idx: Path, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "index", "images", str(folder), "--index", str(idx),
                           "--model", "clipdex-tiny", "--workers", "0"], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_service_under_load_with_a_writer_and_hostile_requests_never_answers_5xx_or_a_wrong_result(
        tmp_path, shapes_dir):
    idx, photos = build_photo_index(tmp_path, shapes_dir)  # 48 drawings: 4 shapes x 6 colours x 2
    more = [tmp_path / "more1", tmp_path / "more2"]
    for i, folder in enumerate(more):
        make_shapes(folder, per_pair=1, size=96, seed=100 + i)  # 24 new drawings each, committed while serving
    huge = _huge_png()
    proc, base = start_server(idx, tmp_path / "cache", "--refresh", "0.5", "--query-timeout", "20")
    port = int(base.rsplit(":", 1)[1])
    statuses: Counter = Counter()
    wrong: list = []
    lock = threading.Lock()

    def record(name: str, r) -> None:
        with lock:
            statuses[(name, r.status_code // 100)] += 1

    def text_client(query: str, shape: str, colour: str) -> None:
        with httpx.Client(timeout=60) as c:
            for _ in range(ROUNDS):
                r = c.post(base + "/api/search", json={"text": query, "k": 3})
                record("text", r)
                top = r.json()["results"][0]["path"] if r.status_code == 200 else None
                if r.status_code != 200 or f"/{shape}/{colour}_" not in top:
                    wrong.append((query, r.status_code, top))

    def like_client(offset: int) -> None:
        with httpx.Client(timeout=60) as c:
            for i in range(ROUNDS):
                rid = (offset + 7 * i) % 48
                r = c.post(base + "/api/search", json={"like_id": rid, "k": 3})
                record("like", r)
                hits = r.json()["results"] if r.status_code == 200 else []
                if not any(h["id"] == rid and h["score"] > 0.999 for h in hits):  # a row finds itself first
                    wrong.append((rid, r.status_code, hits[:1]))

    def hostile_client() -> None:
        with httpx.Client(timeout=60) as c:
            for _ in range(HOSTILE_ROUNDS):
                for name, req in _hostile(base, huge):
                    record(name, c.request(**req))

    writer_out: list = []

    def writer() -> None:
        for folder in more:
            writer_out.append(_index_more(idx, folder))

    threads = [threading.Thread(target=text_client, args=("a red circle", "circle", "red")),
               threading.Thread(target=text_client, args=("a blue square", "square", "blue")),
               threading.Thread(target=like_client, args=(0,)), threading.Thread(target=like_client, args=(5,)),
               threading.Thread(target=hostile_client), threading.Thread(target=hostile_client),
               threading.Thread(target=_slow_header_client, args=(port, 3.0)), threading.Thread(target=writer)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=900)
        assert not any(t.is_alive() for t in threads)
        assert all(w.returncode == 0 for w in writer_out) and len(writer_out) == 2, [w.stderr for w in writer_out]
        deadline = time.monotonic() + 30  # the writer's last commit is served within a few refreshes
        rows = None
        while time.monotonic() < deadline:
            rows = httpx.get(base + "/api/indexes", timeout=30).json()["indexes"][0]["tables"]["images"]["rows"]
            if rows == 96:
                break
            time.sleep(0.2)
        assert rows == 96
        r = httpx.post(base + "/api/search", json={"text": "a red circle", "k": 5}, timeout=30)
        assert any("/more" in h["path"] for h in r.json()["results"])  # the new red circles are found too
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    fives = {k: n for k, n in statuses.items() if k[1] == 5}
    assert not fives, fives
    assert not wrong, wrong[:5]
    assert statuses[("text", 2)] == 2 * ROUNDS and statuses[("like", 2)] == 2 * ROUNDS
    for name in ("deep json", "too many classes", "13000x13000 png", "id 1e400", "bad base64", "made-up method"):
        assert statuses[(name, 4)] == 2 * HOSTILE_ROUNDS, (name, statuses)

"""The service's bounds against hostile requests (issue 19, items 11-13): decoded pixels of a query image, memory of a
thumbnail, the classes file, metrics series, slow headers, and one bounded JSON parser behind every body (deep,
huge, non-finite), so that each of these is a 4xx one-line JSON error, never a 500."""
from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from PIL import Image  # noqa: E402

from tests.serve_helpers import served_photos  # noqa: E402

DEEP = "[" * 100_000 + "]" * 100_000
BODY_ROUTES = ("/api/search", "/api/classify", "/knn-service", "/metadata")


@pytest.fixture(scope="module")
def served(tmp_path_factory, shapes_dir):
    yield from served_photos(tmp_path_factory.mktemp("bounds"), shapes_dir)


def big_png(side: int) -> bytes:
    """A valid PNG of side x side black pixels (one bit each) that weighs a few KB, written row by row so that the
    test never holds the image itself."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = bytes(1 + (side + 7) // 8)   # filter byte 0, then the packed bits
    idat = b"".join(z.compress(row * min(256, side - i)) for i in range(0, side, 256)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)   # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def one_line_error(r, status: int | tuple = (400, 422)) -> str:
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    body = r.json()
    assert body["status"] == r.status_code and "\n" not in body["error"] and len(body["error"]) < 400
    return body["error"]


# item 11: decoded pixels, not only bytes

def test_a_query_image_over_the_pixel_limit_is_a_413_on_every_route_that_decodes_one(served):
    c, _, _ = served
    png = big_png(8000)   # 64 MP in 8 KB: under Pillow's own warning (89 MP), decoded in full by the old code
    b64 = base64.b64encode(png).decode()
    answers = [
        c.post("/api/search", files={"image": ("q.png", png, "image/png")}, data={"k": "1"}),
        c.post("/api/search", json={"image": b64, "k": 1}),
        c.post("/api/classify", files={"image": ("q.png", png, "image/png")}, data={"classes": ["a", "b"]}),
        c.post("/knn-service", content=json.dumps({"image": b64, "indice_name": "photos"}).encode()),
    ]
    for r in answers:
        assert "8000x8000 pixels" in one_line_error(r, 413)


def test_the_pixel_bound_holds_with_pillows_global_limit_off_and_nothing_is_decoded(monkeypatch, tmp_path):
    from PIL import ImageFile

    from retrieval.errors import InvalidInput
    from retrieval.io.imageprep import ImageTooLarge, open_image
    from retrieval.query.search import load_query_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)   # what some libraries do; the bound must not rely on it
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size))
    png = big_png(20000)
    with pytest.raises(ImageTooLarge, match="20000x20000 pixels"):
        open_image(png)
    with pytest.raises(ImageTooLarge, match="at most 1 MP"):
        open_image(big_png(1001), max_pixels=1_000_000)
    (tmp_path / "q.png").write_bytes(png)
    with pytest.raises(InvalidInput, match="too large: 20000x20000"):   # the CLI's --image
        load_query_image(tmp_path / "q.png")
    assert loads == []


# item 12: a thumbnail's memory, the classes file, metrics series, slow headers

def test_reading_a_small_file_allocates_what_it_holds_not_the_limit(tmp_path):
    from retrieval.io.files import read_limited

    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 1000)
    tracemalloc.start()
    try:
        assert read_limited(str(small), 256 << 20) == b"x" * 1000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak:,} bytes allocated to read 1,000"


def test_a_file_that_grows_while_read_is_still_bounded(tmp_path, monkeypatch):
    from retrieval.io import files

    path = tmp_path / "grows.bin"
    path.write_bytes(b"x" * 10)
    real = files.open_regular

    def grow_after_open(p):   # the file grows between its size being asked and being read
        f = real(p)
        with open(path, "ab") as g:
            g.write(b"y" * 100)
        return f

    monkeypatch.setattr(files, "open_regular", grow_after_open)
    with pytest.raises(files.FileTooLarge):
        files.read_limited(str(path), 50)
    assert files.read_limited(str(path), 1000) == b"x" * 10 + b"y" * 200


def test_a_thumbnail_allocates_what_its_file_holds(served):
    c, _, _ = served
    hit = c.post("/api/search", json={"like_id": 2, "k": 1}).json()["results"][0]
    tracemalloc.start()
    try:
        r = c.get(hit["thumbnail"], params={"size": 41})   # a size no other test asks for: not cached
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    assert peak < 64 << 20, f"{peak:,} bytes allocated for the thumbnail of a {os_size(hit['path']):,}-byte file"


def test_an_uploaded_image_allocates_what_it_holds_not_the_upload_limit(served):
    c, _, photos = served
    data = next(photos.rglob("*.png")).read_bytes() + bytes(2 << 20)   # 2 MB: spooled to disk by the form parser
    send = {"files": {"image": ("q.png", data, "image/png")}, "data": {"k": "1"}}
    tracemalloc.start()
    try:
        r = c.post("/api/search", **send)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status_code == 200 and peak < 12 << 20, f"{peak:,} bytes allocated for a {len(data):,}-byte upload"


def os_size(path: str) -> int:
    return Path(path).stat().st_size


def test_a_classes_file_that_is_huge_or_a_device_is_one_line_error(runner, cli, tmp_path, shapes_dir):
    huge = tmp_path / "classes.txt"
    with open(huge, "wb") as f:   # sparse: 17 MiB on paper, nothing on disk
        f.truncate(17 << 20)
    image = next(shapes_dir.rglob("*.png"))
    for classes, message in ((huge, "too large"), ("/dev/zero", "not a regular file")):
        r = runner.invoke(cli, ["classify", str(image), "--classes", str(classes), "--model", "clipdex-tiny"])
        assert r.exit_code != 0 and "Traceback" not in r.output, r.output
        [line] = [ln for ln in r.output.splitlines() if ln.strip()]
        assert f"cannot read classes file {classes}" in line and message in line


def test_made_up_http_methods_share_one_metrics_series(served):
    c, _, _ = served
    for i in range(20):
        assert c.request(f"MADEUP{i}", "/healthz").status_code == 405
    text = c.get("/metrics").text
    assert "MADEUP" not in text
    assert 'clipdex_requests_total{method="other",route="/healthz",status="405"} 20' in text


def test_a_client_sending_its_headers_slowly_is_cut_off(tmp_path):
    """A real uvicorn server on loopback, run with clipdex serve's options (header deadline 0.5 s): a client that
    drips its headers is answered 408 and disconnected, one that never sends a byte is disconnected, while a prompt
    client is served; bounded: 10 s at most."""
    import uvicorn

    from clipdex.serve.config import ServeConfig
    from clipdex.serve.server import server_options

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = ServeConfig(indexes=["x"], port=port, header_timeout=0.5)
    server = uvicorn.Server(uvicorn.Config(app, **{**server_options(config), "lifespan": "off"}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:   # prompt: served, kept alive
            s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)   # connects and never says a word
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\n")
            received = b""
            for _ in range(100):   # one header byte every 0.1 s: 10 s if never cut off
                try:
                    s.sendall(b"x")
                    s.settimeout(0.1)
                    chunk = s.recv(4096)
                except socket.timeout:
                    continue
                except OSError:   # reset: the server closed the connection
                    break
                received += chunk
                if not chunk:
                    break
            assert received.startswith(b"HTTP/1.1 408"), received[:100]
            assert b"request headers not received within 0.5 s" in received
        with idle:
            assert idle.recv(100) == b""   # closed without an answer: no request was begun
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# item 13: one bounded JSON parser, numbers finite and in range

@pytest.mark.parametrize("route", BODY_ROUTES)
def test_bodies_nested_100k_deep_are_400s_on_every_route(served, route):
    c, _, _ = served
    for body in (DEEP, '{"vector": %s}' % DEEP, '{"ids": %s, "classes": %s}' % (DEEP, DEEP)):
        assert "levels deep; at most 32 are accepted" in one_line_error(c.post(route, content=body.encode()), 400)


@pytest.mark.parametrize("body, message", [
    ({"text": "x", "num_images": "inf"}, "num_images must be between"),
    ('{"text": "x", "num_images": 1e400}', "the body holds a number that is not finite: 1e400"),
    ('{"text": "x", "num_images": Infinity}', "not finite: Infinity"),
    ('{"text": "x", "num_result_ids": NaN}', "not finite: NaN"),
    ({"text": "x", "num_images": "1e400"}, "num_images must be between"),
    ({"text": "x", "num_result_ids": 1e300}, "num_result_ids must be between 1 and 10000, got 1e+300"),
    ({"embedding_input": "[1, 2"}, "embedding_input is not JSON"),
    ({"embedding_input": DEEP}, "embedding_input is nested 100000 levels deep"),
    ({"embedding_input": "[NaN]"}, "embedding_input holds a number that is not finite: NaN"),
    ({"embedding_input": {"a": 1}}, "vector: Input should be a valid list"),
])
def test_bad_numbers_and_embeddings_on_knn_service_are_4xx(served, body, message):
    c, _, _ = served
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    assert message in one_line_error(c.post("/knn-service", content=raw))


@pytest.mark.parametrize("ids, message", [
    ("[1e400]", "numbers must be finite"), ("[1e300]", "ids must be row ids"), ('["1e400"]', "ids must be integers"),
    ("[-1]", "ids must be row ids"), ("[99999999999999999999999]", "ids must be row ids"),
])
def test_metadata_ids_out_of_range_are_400s(served, ids, message):
    c, _, _ = served
    r = c.post("/metadata", content=b'{"indice_name": "photos", "ids": %s}' % ids.encode())
    assert message in one_line_error(r, 400)


@pytest.mark.parametrize("body, message", [
    ('{"like_id": 1, "k": 1e400}', "numbers must be finite"),
    ('{"like_id": 1, "weight": 1e308, "negative": ["x"]}', "weight: Input should be less than or equal to 1000"),
    ('{"like_id": 1, "negative": ["a"], "negative_weights": [-1e308]}', "negative_weights.0"),
    ('{"like_id": -5}', "like_id: Input should be greater than or equal to 0"),
    ('{"vector": ["inf"]}', "vector.0: Input should be a finite number"),
])
def test_numbers_out_of_range_on_search_are_4xx(served, body, message):
    c, _, _ = served
    assert message in one_line_error(c.post("/api/search", content=body.encode()))


@pytest.mark.parametrize("classes", [[1e300], [None], [["a,b"]], [{"a": "b,c"}]])
def test_classes_that_are_not_text_are_a_422_on_classify(served, classes):
    c, _, _ = served
    r = c.post("/api/classify", json={"classes": classes, "image": "iVBORw0KGgo="})
    assert "classes" in one_line_error(r, 422)


def test_the_parser_counts_depth_outside_strings_and_bounds_values():
    from clipdex.serve.bodies import MAX_DEPTH, MAX_VALUES, parse_json
    from retrieval.errors import InvalidInput

    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(InvalidInput, match=f"nested {MAX_DEPTH + 1} levels"):
        parse_json("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    text = '{"s": "[[[[{{{{ \\" ]]]] \\\\", "t": ["\\\\"]}'   # brackets and escaped quotes inside strings
    assert parse_json(text) == {"s": '[[[[{{{{ " ]]]] \\', "t": ["\\"]}
    assert parse_json(json.dumps({"image": "A" * (3 << 20)}))["image"] == "A" * (3 << 20)
    assert len(parse_json(json.dumps([0.5] * 65536))) == 65536
    with pytest.raises(InvalidInput, match="over 200,000 values"):
        parse_json("[" + "0," * (MAX_VALUES + 1) + "0]")


def test_an_unterminated_string_of_escaped_quotes_is_scanned_once():
    """The string scanner must not fail once begun: a failed match is retried from every escaped quote inside,
    quadratic time (a 32 KB body cost 6 s); 20,000 escaped quotes stay bounded even if it ever comes back."""
    from clipdex.serve.bodies import _STRING, parse_json
    from retrieval.errors import InvalidInput

    tail = b'"' + b'\\"' * 5
    assert _STRING.match(tail).end() == len(tail) and _STRING.match(b'"ab\\').end() == 4
    with pytest.raises(InvalidInput, match="not JSON: Unterminated string"):
        parse_json(b'{"a": "' + b'\\"' * 20_000)


def test_the_service_parses_json_bodies_in_one_place():
    import clipdex.serve as pkg

    users = sorted(p.name for p in Path(pkg.__file__).parent.glob("*.py") if "json.loads" in p.read_text())
    assert users == ["bodies.py"]

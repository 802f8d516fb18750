"""clipdex serve's JSON API with FastAPI's TestClient (lifespan on) on an index of drawn shapes: search by image,
vector, example and text with negatives, pages, filters, thumbnails and files by row id only, bounds and bad input
as JSON errors, auth, metrics, classify."""
from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from tests.serve_helpers import build_photo_index, client, served_photos  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory, shapes_dir):
    yield from served_photos(tmp_path_factory.mktemp("serve"), shapes_dir, max_upload=200_000)


def probe(photos):
    return photos / "square" / "green_1.png"


def search(c, **body):
    r = c.post("/api/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_indexes_lists_model_tables_and_row_counts(served):
    c, _, _ = served
    body = c.get("/api/indexes").json()
    [ix] = body["indexes"]
    assert ix["name"] == "photos" and ix["model"] == "clipdex-tiny" and ix["tables"]["images"]["rows"] == 48
    assert c.get("/api/indexes/photos").json() == ix
    r = c.get("/api/indexes/nope")
    assert r.status_code == 404 and "no index named 'nope'" in r.json()["error"]


def test_an_uploaded_image_finds_itself_first_and_base64_gives_the_same(served):
    c, _, photos = served
    data = probe(photos).read_bytes()
    r = c.post("/api/search", files={"image": ("q.png", data, "image/png")}, data={"k": "5"})
    up = r.json()["results"]
    assert r.status_code == 200 and up[0]["path"] == str(probe(photos)) and up[0]["score"] > 0.9999
    assert [h["rank"] for h in up] == [1, 2, 3, 4, 5]
    assert up[0]["thumbnail"] == f"/api/thumb/photos/images/{up[0]['id']}"
    b64 = search(c, image=base64.b64encode(data).decode(), k=5)
    assert [h["id"] for h in b64] == [h["id"] for h in up]


def test_pages_continue_where_the_last_one_ended(served):
    c, _, photos = served
    vec = search(c, like_id=3, k=12)
    page = search(c, like_id=3, k=5, offset=5)
    assert [h["id"] for h in page] == [h["id"] for h in vec[5:10]] and [h["rank"] for h in page] == [6, 7, 8, 9, 10]


def test_more_like_this_with_a_negative_is_the_normalised_weighted_sum(served, tiny):
    c, idx, _ = served
    from retrieval.index.directory import open_index
    from retrieval.store.base import arrow_to_vectors

    with open_index(idx) as ix:
        e, _ = arrow_to_vectors(ix.store.take("images", np.array([7]), ["vector"]).column("vector"), ix.dim)
    n = tiny.encode_texts(["a blue square"])[0]
    q = e[0] - 0.25 * n
    q /= np.linalg.norm(q)
    got = search(c, like_id=7, negative=["a blue square"], negative_weights=[0.25], k=10)
    ref = search(c, vector=q.tolist(), k=10)
    assert [h["id"] for h in got] == [h["id"] for h in ref]
    np.testing.assert_allclose([h["score"] for h in got], [h["score"] for h in ref], atol=1e-5)
    plain = search(c, like_id=7, k=1)
    assert plain[0]["id"] == 7 and plain[0]["score"] > 0.9999


def test_a_text_query_is_encoded_by_the_index_model(served, tiny):
    c, _, _ = served
    got = search(c, text="a red circle", k=5)
    ref = search(c, vector=tiny.encode_texts(["a red circle"])[0].tolist(), k=5)
    assert [h["id"] for h in got] == [h["id"] for h in ref]


def test_served_query_vectors_are_kept_for_the_next_optimize(served, tiny):
    from retrieval.index.query_cache import load_queries

    c, idx, _ = served
    texts = ["a blue star", "a yellow square", "a green triangle"]
    for t in texts:
        search(c, text=t, k=3)
    service = c.app.state.service
    name = next(iter(service.registry.items))
    service._keep_queries(name, flush=True)  # the server writes every 64 queries and when it stops
    kept, kind = load_queries(idx)
    assert kind == "served" and len(kept) >= 3
    want = tiny.encode_texts(texts)
    assert np.allclose(kept[-3:], want, atol=1e-5)  # the query vectors themselves, newest last


def test_where_filters_rows_and_a_file_reading_filter_is_a_400_that_leaks_nothing(served):
    c, _, photos = served
    hits = search(c, like_id=0, k=48, where="path LIKE '%/circle/%'")
    assert len(hits) == 12 and all("/circle/" in h["path"] for h in hits)
    for bad in ["CAST((SELECT string_agg(column0,'|') FROM read_csv('/etc/passwd')) AS INTEGER)=1",
                "glob('/etc/*') IS NOT NULL", "width > 1; DROP TABLE images", "nosuchcolumn = 1"]:
        r = c.post("/api/search", json={"like_id": 0, "where": bad})
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"].startswith("bad --where filter") and "root:" not in r.text


@pytest.mark.parametrize("body, status, message", [
    ({"like_id": 0, "k": 0}, 422, "k:"),
    ({"like_id": 0, "k": 100000}, 422, "k:"),
    ({"like_id": 0, "offset": -1}, 422, "offset:"),
    ({"like_id": 0, "min_score": 5}, 422, "min_score:"),
    ({"like_id": 0, "text": "x"}, 400, "exactly one query"),
    ({}, 400, "exactly one query"),
    ({"like_id": 99999}, 404, "no row 99999"),
    ({"like_id": 0, "table": "nope"}, 400, "table must be one of"),
    ({"like_id": 0, "table": "texts"}, 404, "has no table 'texts'"),
    ({"index": "other", "like_id": 0}, 404, "no index named"),
    ({"vector": [1.0, 2.0]}, 400, "64-dimensional"),
    ({"vector": [0.0] * 64}, 400, "zero"),
    ({"text": "   "}, 400, "empty text"),
    ({"image": "not base64 at all!"}, 400, "not valid base64"),
    ({"image": base64.b64encode(b"plain text").decode()}, 400, "query image: not an image"),
    ({"like_id": 0, "negative": ["x"], "negative_weights": [1, 2]}, 400, "negative_weights"),
    ({"like_id": 0, "bogus": 1}, 422, "bogus"),
    ({"like_id": 10**30}, 422, "like_id:"),
    ({"text": "x" * 10_001}, 422, "text:"),
    ({"like_id": 0, "negative": ["x"] * 17}, 422, "negative:"),
])
def test_bad_requests_are_json_errors_with_the_right_status(served, body, status, message):
    c, _, _ = served
    r = c.post("/api/search", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"] and r.json()["status"] == status


def test_bodies_that_are_not_json_objects_and_oversized_uploads_are_refused(served):
    c, _, _ = served
    assert c.post("/api/search", content=b"{nope").status_code == 400
    assert c.post("/api/search", content=b"[1, 2]").json()["error"] == "the body must be a JSON object"
    assert c.post("/api/search", content=b"").status_code == 400
    big = os.urandom(250_000)
    r = c.post("/api/search", files={"image": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "upload limit" in r.json()["error"]
    chunked = c.post("/api/search", content=iter([b'{"like_id": ', b'0}']))   # no Content-Length
    assert chunked.status_code == 411 and "Content-Length" in chunked.json()["error"]
    r = c.post("/api/search", files={"image": ("x.png", b"GIF89a not really", "image/png")})
    assert r.status_code == 400 and r.json()["error"].startswith("query image:")


def test_a_decompression_bomb_is_refused_not_decoded(served):
    c, _, _ = served
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")   # 400 MP, a few KB: over twice Pillow's pixel limit
    r = c.post("/api/search", files={"image": ("bomb.png", buf.getvalue(), "image/png")})
    assert r.status_code == 413 and "too large" in r.json()["error"]


def test_thumbnails_are_jpegs_with_an_etag_and_files_are_served_with_ranges(served):
    c, _, photos = served
    hit = search(c, like_id=5, k=1)[0]
    r = c.get(hit["thumbnail"], params={"size": 32})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    etag = r.headers["etag"]
    assert c.get(hit["thumbnail"], params={"size": 32}, headers={"If-None-Match": etag}).status_code == 304
    assert c.get(hit["thumbnail"], params={"size": 64}).headers["etag"] != etag
    assert c.get(hit["thumbnail"], params={"size": 5000}).status_code == 422
    whole = open(hit["path"], "rb").read()
    assert c.get(hit["file"]).content == whole
    r = c.get(hit["file"], headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == whole[10:20]


@pytest.mark.parametrize("url", [
    "/api/file/photos/images/..%2f..%2f..%2fetc%2fpasswd", "/api/file/photos/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/api/file/photos/images/%2Fetc%2Fpasswd", "/api/thumb/photos/images/-1", "/api/file/photos/images/99999",
    "/api/file/photos/..%2F..%2Fetc/0", "/api/file/..%2f/images/0", "/api/file/photos/errors/0",
    "/api/file/photos/images/99999999999999999999999",
])
def test_no_path_from_a_request_reaches_the_filesystem(served, url):
    c, _, _ = served
    r = c.get(url)
    assert r.status_code in (404, 422) and "error" in r.json() and "root:" not in r.text


def test_a_file_swapped_for_a_symlink_out_of_the_tree_is_not_served(tmp_path, shapes_dir):
    idx, photos = build_photo_index(tmp_path, shapes_dir)
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    with client(idx, tmp_path / "cache") as c:
        hit = search(c, image=base64.b64encode(probe(photos).read_bytes()).decode(), k=1)[0]
        assert c.get(hit["file"]).status_code == 200
        os.remove(hit["path"])
        os.symlink(secret, hit["path"])
        r = c.get(hit["file"])
        assert r.status_code == 404 and "symbolic link" in r.json()["error"]
        assert "top secret" not in r.text and c.get(hit["thumbnail"]).status_code == 404


def test_a_token_guards_the_api_but_not_the_page(tmp_path, shapes_dir):
    idx, _ = build_photo_index(tmp_path, shapes_dir)
    with client(idx, tmp_path / "cache", token="s3cret") as c:
        r = c.get("/api/indexes")
        assert r.status_code == 401 and r.json()["error"].startswith("missing or wrong token")
        assert c.get("/api/indexes", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/indexes", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/indexes", params={"token": "s3cret"}).status_code == 200
        assert c.post("/knn-service", content=b"{}").status_code == 401
        assert c.get("/").status_code == 200 and c.get("/healthz").status_code == 200


def test_another_host_than_loopback_needs_a_token_or_no_auth():
    from clipdex.serve.config import ServeConfig
    from retrieval.errors import InvalidInput

    with pytest.raises(InvalidInput, match="--token TOKEN"):
        ServeConfig(indexes=["x"], host="0.0.0.0").check()
    assert ServeConfig(indexes=["x"], host="0.0.0.0", no_auth=True).check().host == "0.0.0.0"
    assert ServeConfig(indexes=["x"], host="::1").check()


def test_healthz_and_metrics_count_requests(served):
    c, _, _ = served
    assert c.get("/healthz").json() == {"status": "ok", "indexes": ["photos"]}
    before = c.get("/metrics").text
    search(c, like_id=1, k=1)
    text = c.get("/metrics").text
    line = 'clipdex_requests_total{method="POST",route="/api/search",status="200"}'
    count = lambda t: int(next((ln.split()[-1] for ln in t.splitlines() if ln.startswith(line)), 0))  # noqa: E731
    assert count(text) == count(before) + 1 and "clipdex_request_seconds_bucket" in text


def test_a_search_past_the_timeout_is_a_504(tmp_path, shapes_dir):
    idx, _ = build_photo_index(tmp_path, shapes_dir)
    with client(idx, tmp_path / "cache", query_timeout=1e-9) as c:
        r = c.post("/api/search", json={"text": "a red circle"})
        assert r.status_code == 504 and "took longer than" in r.json()["error"]
        assert c.get("/healthz").status_code == 200   # the server is still up


def test_classify_an_uploaded_image_zero_shot(served):
    c, _, photos = served
    r = c.post("/api/classify", files={"image": ("q.png", probe(photos).read_bytes(), "image/png")},
               data={"classes": ["circle", "square", "triangle"], "top_k": "3"})
    body = r.json()
    assert r.status_code == 200 and body["method"] == "zeroshot"
    probs = [x["probability"] for x in body["classes"]]
    assert sorted(x["class"] for x in body["classes"]) == ["circle", "square", "triangle"]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4
    r = c.post("/api/classify", json={"classes": ["a"], "image": "x"})
    assert r.status_code == 422 and "classes" in r.json()["error"]


def test_the_openapi_page_documents_the_api(served):
    c, _, _ = served
    spec = c.get("/openapi.json").json()
    assert {"/api/search", "/api/indexes", "/api/thumb/{index}/{table}/{row_id}", "/knn-service"} <= set(spec["paths"])
    body = spec["paths"]["/api/search"]["post"]["requestBody"]["content"]
    assert "like_id" in json.dumps(body["application/json"]) and "multipart/form-data" in body

"""clip-retrieval's back-end routes, called exactly as its ClipClient calls them (a JSON body with no
Content-Type) and as its web front does (text/plain): shapes of /indices-list, /knn-service and /metadata, null /
"" / string-number fields, deduplication, image_url rules, CORS and JSON errors."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from tests.serve_helpers import served_photos  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory, shapes_dir):
    for c, _, photos in served_photos(tmp_path_factory.mktemp("compat"), shapes_dir):
        yield c, photos


def client_body(**over):
    """What clip_client.ClipClient.__search_knn_api__ posts (json.dumps, no Content-Type header)."""
    body = {"text": None, "image": None, "image_url": None, "embedding_input": None, "deduplicate": True,
            "use_safety_model": True, "use_violence_detector": True, "indice_name": "photos", "use_mclip": False,
            "aesthetic_score": 9, "aesthetic_weight": 0.5, "modality": "image", "num_images": 40,
            "num_result_ids": 40, "verbose": False}
    return json.dumps({**body, **over}).encode()


def knn(c, body: bytes, headers=None):
    r = c.post("/knn-service", content=body, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()


def test_indices_list_is_a_json_array_of_names_with_cors(served):
    c, _ = served
    r = c.get("/indices-list")
    assert r.json() == ["photos"] and r.headers["access-control-allow-origin"] == "*"
    r = c.options("/knn-service", headers={"Origin": "http://x", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"


def test_the_clients_image_query_without_content_type_finds_the_image_first(served):
    c, photos = served
    probe = photos / "circle" / "red_0.png"
    image = base64.b64encode(probe.read_bytes()).decode()
    out = knn(c, client_body(image=image, deduplicate=False, num_images=3, num_result_ids=10))
    assert len(out) == 10 and out[0]["image_path"] == str(probe) and out[0]["similarity"] > 0.9999
    assert all(set(o) >= {"id", "similarity"} for o in out)
    assert [("image" in o, "caption" in o) for o in out] == [(True, True)] * 3 + [(False, False)] * 7
    assert base64.b64decode(out[0]["image"])[:2] == b"\xff\xd8" and "url" not in out[0]
    sims = [o["similarity"] for o in out]
    assert sims == sorted(sims, reverse=True)


def test_the_fronts_text_plain_text_query_with_string_numbers_and_empty_fields(served, tiny):
    c, _ = served
    body = client_body(text="a red circle", image="", image_url=None, embedding_input="", num_images="5",
                       num_result_ids="5", deduplicate="false", aesthetic_score="", use_mclip=None)
    out = knn(c, body, {"Content-Type": "text/plain;charset=UTF-8"})
    ref = knn(c, client_body(embedding_input=tiny.encode_texts(["a red circle"])[0].tolist(), num_images=5,
                             num_result_ids=5, deduplicate=False))
    assert [o["id"] for o in out] == [o["id"] for o in ref] and len(out) == 5


def test_deduplicate_drops_results_too_close_to_a_kept_one(served):
    c, _ = served
    emb = np.ones(64, np.float32).tolist()
    full = knn(c, client_body(embedding_input=emb, deduplicate=False, num_images=0 or 1, num_result_ids=48))
    dedup = knn(c, client_body(embedding_input=emb, deduplicate=True, num_images=1, num_result_ids=48))
    assert len(dedup) < len(full) == 48
    assert [o["id"] for o in dedup] == [o["id"] for o in full if o["id"] in {d["id"] for d in dedup}]


def test_metadata_answers_id_and_metadata_pairs(served):
    c, photos = served
    r = c.post("/metadata", content=json.dumps({"ids": [0, 1, 99999], "indice_name": "photos"}).encode())
    out = r.json()
    assert r.status_code == 200 and [o["id"] for o in out] == [0, 1, 99999]
    assert out[0]["metadata"]["image_path"].startswith(str(photos)) and "image" in out[0]["metadata"]
    assert out[2]["metadata"] == {}


def test_image_url_of_our_own_thumbnail_is_more_like_that_row_and_remote_urls_are_refused(served):
    c, _ = served
    out = knn(c, client_body(image_url="http://127.0.0.1:8000/api/thumb/photos/images/9", deduplicate=False))
    assert out[0]["id"] == 9 and out[0]["similarity"] > 0.9999
    r = c.post("/knn-service", content=client_body(image_url="http://169.254.169.254/latest/meta-data"))
    assert r.status_code == 400 and "--allow-url-fetch" in r.json()["error"]


@pytest.mark.parametrize("body, message", [
    (b"not json", "not JSON"), (b"[]", "JSON object"), (client_body(), "give text, image"),
    (client_body(text="x", indice_name="nope"), "no index named"), (client_body(text="x", num_images="many"), "number"),
    (client_body(text="x", modality="text"), "caption vectors"),
])
def test_bad_knn_requests_are_json_errors(served, body, message):
    c, _ = served
    r = c.post("/knn-service", content=body)
    assert 400 <= r.status_code < 500 and message in r.json()["error"]
    assert r.headers["access-control-allow-origin"] == "*"

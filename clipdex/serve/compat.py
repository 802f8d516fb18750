"""clip-retrieval's back-end protocol, so its ``ClipClient`` and its web front work against clipdex unmodified.

- ``GET /indices-list`` -> ``["name", ...]``;
- ``POST /knn-service`` with a JSON body (sent without a Content-Type by the client, as ``text/plain`` by the
  front: the raw body is parsed): ``indice_name``, one of ``text`` / ``image`` (base64) / ``image_url`` /
  ``embedding_input``, ``modality`` ("image" searches the image vectors, "text" the caption vectors),
  ``num_images``, ``num_result_ids``, ``deduplicate``; safety, violence, aesthetic and mclip flags are accepted
  and ignored. Fields may be null, "" or numbers written as strings. The answer is a JSON array of
  ``{"id", "similarity"}``; the first ``num_images`` also carry ``caption``, ``image_path`` and ``image`` (a base64
  JPEG thumbnail), and ``url`` only when the row has a URL a browser can load;
- ``POST /metadata`` with ``{"ids": [...], "indice_name"}`` -> ``[{"id", "metadata": {...}}]``.

``image_url`` pointing at this service's own thumbnail or file route is answered from the row's stored vector
(what the front sends for "similar images"); any other URL is refused unless the service runs with
``--allow-url-fetch``.
"""
from __future__ import annotations

import base64
import re
import urllib.request
from urllib.parse import urlsplit

import numpy as np
from fastapi import APIRouter, Request

from clipdex.serve.bodies import body_limit, parse_json, read_json
from clipdex.serve.config import MAX_K, MAX_OFFSET
from clipdex.serve.media import thumbnail
from clipdex.serve.queries import SearchRequest, TooLarge
from clipdex.serve.registry import NotFound, ServedIndex, jsonable
from retrieval.errors import InvalidInput

router = APIRouter(tags=["clip-retrieval"])
PATHS = ("/indices-list", "/knn-service", "/metadata")
DEDUP_IP = 0.94
MAX_IMAGES = 500          # results that carry a base64 thumbnail
THUMB = 256
OWN_ROUTE = re.compile(r"^/api/(?:thumb|file)/([^/]+)/(images|frames|videos)/(\d+)$")


def text_field(body: dict, name: str) -> str | None:
    v = body.get(name)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise InvalidInput(f"{name} must be text")
    return v


def int_field(body: dict, name: str, default: int, lo: int, hi: int) -> int:
    v = body.get(name)
    if v is None or v == "":
        return default
    try:
        x = float(v)   # numbers written as strings too; "inf" and "1e400" read as inf, refused below
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"{name} must be a number, got {str(v)[:40]!r}") from None
    if not lo <= x <= hi:   # NaN fails this too
        raise InvalidInput(f"{name} must be between {lo} and {hi}, got {str(v)[:40]}")
    return int(x)


def bool_field(body: dict, name: str, default: bool) -> bool:
    v = body.get(name)
    if v is None or v == "":
        return default
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


@router.get("/indices-list")
async def indices_list(request: Request):
    return request.app.state.service.registry.names()


@router.post("/knn-service")
async def knn_service(request: Request):
    svc = request.app.state.service
    body = await read_json(request, body_limit(svc.config.max_upload), empty={})
    served = svc.registry.get(text_field(body, "indice_name"))
    num_images = int_field(body, "num_images", 40, 1, MAX_OFFSET)
    k = int_field(body, "num_result_ids", num_images, 1, MAX_OFFSET)
    column = "text_vector" if text_field(body, "modality") == "text" else "vector"
    if not await svc.run(served.has_vectors, "images", column):
        raise InvalidInput(f"index {served.name!r} has no caption vectors for modality text")
    fields = {"index": served.name, "table": "images", "column": column, "k": min(k, MAX_K)}  # at most MAX_K
    image_bytes = None
    embedding = body.get("embedding_input")
    if isinstance(embedding, str) and embedding.strip():
        embedding = parse_json(embedding, "embedding_input")
    if text_field(body, "text"):
        fields["text"] = body["text"]
    elif text_field(body, "image"):
        fields["image"] = body["image"]
    elif text_field(body, "image_url"):
        own = own_row(body["image_url"])
        if own is not None and own[0] == served.name:
            fields["like_id"] = own[2]
            fields["table"] = own[1]
        elif not svc.config.allow_url_fetch:
            raise InvalidInput("image_url: fetching URLs is off; start the service with --allow-url-fetch")
        else:
            image_bytes = await svc.run(fetch_url, body["image_url"], svc.config.max_upload)
    elif embedding not in (None, "", []):
        fields["vector"] = embedding
    else:
        raise InvalidInput("give text, image, image_url or embedding_input")
    if fields["table"] != "images":   # more like a frame or video: search the images with its vector
        fields["vector"] = (await svc.run(served.vector, fields.pop("table"), fields.pop("like_id"))).tolist()
        fields["table"] = "images"
    req = SearchRequest.model_validate(fields)
    found = (await svc.search(req, image_bytes=image_bytes))["results"]
    if bool_field(body, "deduplicate", True) and found:
        keep = await svc.run(dedup_keep, served, [r["id"] for r in found], column)
        found = [r for r, ok in zip(found, keep) if ok]
    out = []
    for i, r in enumerate(found):
        item = {"id": r["id"], "similarity": r["score"]}
        if i < min(num_images, MAX_IMAGES):
            item.update(await metadata(svc, served, r))
        out.append(item)
    return out


@router.post("/metadata")
async def metadata_route(request: Request):
    svc = request.app.state.service
    body = await read_json(request, body_limit(svc.config.max_upload), empty={})
    served = svc.registry.get(text_field(body, "indice_name"))
    ids = body.get("ids") or []
    if not isinstance(ids, list) or len(ids) > MAX_IMAGES:
        raise InvalidInput(f"ids must be a list of at most {MAX_IMAGES} row ids")
    out = []
    for raw in ids:
        row_id = row_id_field(raw)
        try:
            row = await svc.run(served.row, "images", row_id)
        except NotFound:
            out.append({"id": row_id, "metadata": {}})
            continue
        out.append({"id": row_id, "metadata": await metadata(svc, served, jsonable(row))})
    return out


def row_id_field(raw) -> int:
    """A row id of ``ids``: an integer (or one written as a string) from 0 to 2^63 - 1."""
    try:
        row_id = int(raw)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"ids must be integers, got {str(raw)[:40]!r}") from None
    if not 0 <= row_id < 1 << 63 or isinstance(raw, bool):
        raise InvalidInput(f"ids must be row ids from 0 to 2^63-1, got {str(raw)[:40]}")
    return row_id


async def metadata(svc, served: ServedIndex, row: dict) -> dict:
    """caption, image_path, image (base64 JPEG thumbnail) and, when the row has one, a loadable url."""
    meta = {"caption": row.get("caption") or "", "image_path": row.get("path")}
    url = row.get("url")
    if isinstance(url, str) and urlsplit(url).scheme in ("http", "https", "data"):
        meta["url"] = url
    try:
        data, _ = await svc.run(thumbnail, served, "images", int(row["id"]), THUMB, None, svc.config.cache_dir)
        meta["image"] = base64.b64encode(data).decode("ascii")
    except (InvalidInput, NotFound):
        pass   # the file is gone or unreadable: the result keeps its caption and path
    return meta


def dedup_keep(served: ServedIndex, ids: list[int], column: str) -> list[bool]:
    """Greedy, best first: drop a result whose inner product with a kept one is >= 0.94."""
    rows = served.index.store.take("images", np.asarray(ids, np.int64), ["id", column])
    pos = {int(v): i for i, v in enumerate(rows.column("id").to_pylist())}
    vecs = np.zeros((len(ids), served.index.dim), np.float32)
    for j, row_id in enumerate(ids):
        v = rows.column(column)[pos[row_id]].as_py()
        if v is not None:
            vecs[j] = v
    keep: list[bool] = []
    kept: list[np.ndarray] = []
    for v in vecs:
        dup = bool(kept) and float(np.max(np.stack(kept) @ v)) >= DEDUP_IP
        keep.append(not dup)
        if not dup:
            kept.append(v)
    return keep


def own_row(url: str) -> tuple[str, str, int] | None:
    """A URL of this service's thumbnail or file route -> (index, table, id); else None."""
    m = OWN_ROUTE.match(urlsplit(url).path)
    return (m.group(1), m.group(2), int(m.group(3))) if m else None


def fetch_url(url: str, limit: int) -> bytes:
    """Only with --allow-url-fetch: download an http(s) image, at most ``limit`` bytes, 10 s."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise InvalidInput("image_url must be an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            data = r.read(limit + 1)
    except OSError as exc:
        raise InvalidInput(f"image_url: cannot fetch it ({exc})") from None
    if len(data) > limit:
        raise TooLarge(f"image_url: over the {limit:,}-byte upload limit")
    return data

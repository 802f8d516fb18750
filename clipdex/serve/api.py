"""clipdex's own JSON API: indexes, search, thumbnails, files, classify, health and metrics."""
from __future__ import annotations

import json
from typing import Optional

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from clipdex.serve.classify import classify_image
from clipdex.serve.config import MAX_SIZE
from clipdex.serve.media import row_file, thumbnail
from clipdex.serve.queries import SearchRequest, TooLarge, decode_base64_image, decode_image
from retrieval.errors import InvalidInput

router = APIRouter()
FORM_LISTS = ("negative", "negative_weights", "vector", "classes")
SEARCH_BODY = {"requestBody": {"content": {
    "application/json": {"schema": SearchRequest.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "format": "binary"}, "text": {"type": "string"}, "index": {"type": "string"},
        "table": {"type": "string"}, "where": {"type": "string"}, "k": {"type": "integer"},
        "offset": {"type": "integer"}, "min_score": {"type": "number"},
        "negative": {"type": "array", "items": {"type": "string"}}}}}}, "required": True}}


def service(request: Request):
    return request.app.state.service


async def read_body(request: Request, limit: int) -> tuple[dict, bytes | None]:
    """JSON (whatever the Content-Type says) or multipart form fields -> (fields, uploaded image bytes)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data") or ctype.startswith("application/x-www-form-urlencoded"):
        form = await request.form(max_files=1, max_fields=64)
        fields: dict = {}
        upload = None
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                if key != "image":
                    raise InvalidInput(f"unexpected file field {key!r}; upload the query image as 'image'")
                upload = await value.read(limit + 1)
                if len(upload) > limit:
                    raise TooLarge(f"image is larger than the {limit:,}-byte upload limit")
            elif value == "":
                continue
            elif key in FORM_LISTS:
                fields.setdefault(key, []).append(value)
            else:
                fields[key] = value
        return fields, upload
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput("empty request body: send a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body, None


@router.get("/healthz")
async def healthz(request: Request):
    return {"status": "ok", "indexes": service(request).registry.names()}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request):
    svc = service(request)
    return PlainTextResponse(svc.metrics.render(svc.counters()), media_type="text/plain; version=0.0.4")


@router.get("/api/indexes")
async def list_indexes(request: Request):
    svc = service(request)
    return {"indexes": [await svc.run(s.describe) for s in svc.registry.items.values()]}


@router.get("/api/indexes/{name}")
async def get_index(name: str, request: Request):
    svc = service(request)
    return await svc.run(svc.registry.get(name).describe)


@router.post("/api/search", openapi_extra=SEARCH_BODY)
async def search(request: Request):
    """Search one table of an index: one query (text, image, vector or like_id), optional negatives, a filter,
    a page (k, offset). Results carry rank, score, id, the row's columns, thumbnail and file URLs."""
    svc = service(request)
    fields, upload = await read_body(request, svc.config.max_upload)
    req = SearchRequest.model_validate(fields)
    return await svc.search(req, image_bytes=upload)


@router.get("/api/thumb/{index}/{table}/{row_id}")
async def thumb(index: str, table: str, row_id: int, request: Request, size: int = Query(256, ge=16, le=MAX_SIZE),
                t: Optional[float] = Query(None, ge=0)):
    """A JPEG thumbnail of a row's image (a video's frame at ``t`` seconds), cached; ETag / If-None-Match."""
    svc = service(request)
    served = svc.registry.get(index)
    data, etag = await svc.run(thumbnail, served, table, row_id, size, t, svc.config.cache_dir)
    headers = {"ETag": f'"{etag}"', "Cache-Control": "private, max-age=3600"}
    if request.headers.get("if-none-match", "").strip('"') == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get("/api/file/{index}/{table}/{row_id}")
async def file(index: str, table: str, row_id: int, request: Request):
    """The original file of a row (range requests supported, so a video can seek)."""
    svc = service(request)
    path, st, _ = await svc.run(row_file, svc.registry.get(index), table, row_id)
    return FileResponse(path, stat_result=st, filename=path.name, content_disposition_type="inline")


class ClassifyRequest(BaseModel):
    classes: list[str] = Field(..., min_length=2, description="class names (at least 2)")
    method: str = Field("zeroshot", description="zeroshot, or a retrieval method with a support index: susx, "
                                                  "tipx, xmore, reco")
    support: Optional[str] = Field(None, description="served index used as the support set")
    index: Optional[str] = Field(None, description="served index whose model encodes the image")
    image: Optional[str] = Field(None, description="base64 image, or upload a file")
    top_k: int = Field(5, ge=1, le=100)


@router.post("/api/classify")
async def classify(request: Request):
    """Classify one uploaded image into the given classes with one of clipdex's methods."""
    svc = service(request)
    fields, upload = await read_body(request, svc.config.max_upload)
    if isinstance(fields.get("classes"), list) and len(fields["classes"]) == 1 and "," in fields["classes"][0]:
        fields["classes"] = [c.strip() for c in fields["classes"][0].split(",") if c.strip()]
    req = ClassifyRequest.model_validate(fields)
    if upload is None and not req.image:
        raise InvalidInput("give the image to classify (upload 'image' or base64 'image')")
    data = upload if upload is not None else decode_base64_image(req.image, svc.config.max_upload)
    image = await svc.run(decode_image, data, svc.config.max_upload)
    served = svc.registry.get(req.index)
    support = svc.registry.get(req.support).index.path if req.support else None
    return JSONResponse(await svc.run(classify_image, served, image, req.classes, req.method, support, req.top_k))


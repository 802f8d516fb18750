"""clipdex's own JSON API: indexes, search, thumbnails, files, classify, health and metrics."""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from clipdex.serve.bodies import read_body
from clipdex.serve.classify import check_work, classify_image
from clipdex.serve.config import MAX_SIZE, MAX_T
from clipdex.serve.files import file_response
from clipdex.serve.media import row_file, thumbnail
from clipdex.serve.queries import SearchRequest, decode_base64_image, decode_image
from retrieval.errors import InvalidInput

router = APIRouter()
SEARCH_BODY = {"requestBody": {"content": {
    "application/json": {"schema": SearchRequest.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "format": "binary"}, "text": {"type": "string"}, "index": {"type": "string"},
        "table": {"type": "string"}, "where": {"type": "string"}, "k": {"type": "integer"},
        "offset": {"type": "integer"}, "min_score": {"type": "number"},
        "negative": {"type": "array", "items": {"type": "string"}}}}}}, "required": True}}


def service(request: Request):
    return request.app.state.service


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
                t: Optional[float] = Query(None, ge=0, le=MAX_T)):
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
    """The original file of a row (range requests supported, so a video can seek), only while it is the file that
    was indexed (``clipdex.serve.files``); sent from the file opened and checked, never opened again by path."""
    svc = service(request)
    opened, _ = await svc.run(row_file, svc.registry.get(index), table, row_id)
    return file_response(opened, request)


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)
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
    given = fields.get("classes")
    if isinstance(given, list) and len(given) == 1 and isinstance(given[0], str) and "," in given[0]:
        fields["classes"] = [c.strip() for c in fields["classes"][0].split(",") if c.strip()]
    req = ClassifyRequest.model_validate(fields)
    check_work(req.classes, svc.config)   # 413 before any work: the number and length of classes, prompts
    if upload is None and not req.image:
        raise InvalidInput("give the image to classify (upload 'image' or base64 'image')")
    data = upload if upload is not None else decode_base64_image(req.image, svc.config.max_upload)
    image = await svc.run(decode_image, data, svc.config.max_upload, svc.config.max_pixels)
    served = svc.registry.get(req.index)
    support = svc.registry.get(req.support).index.path if req.support else None
    work = svc.run(classify_image, served, image, req.classes, req.method, support, req.top_k)
    return JSONResponse(await svc.bounded(work, "classification", "give fewer classes"))


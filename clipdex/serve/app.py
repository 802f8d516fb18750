"""``create_app(config)``: the FastAPI application of ``clipdex serve``.

Start-up (lifespan) opens the indexes read-only and loads each model once; every error leaves as a JSON body
``{"error": "<one line>", "status": <code>}``; a bearer token, when set, guards everything but the page's own
files and ``/healthz`` (``?token=`` is accepted too, for ``<img src>``); the clip-retrieval routes answer CORS.
"""
from __future__ import annotations

import hmac
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from clipdex.serve import api, compat, dedup
from clipdex.serve.bodies import body_limit
from clipdex.serve.config import ServeConfig
from clipdex.serve.queries import TooLarge
from clipdex.serve.registry import NotFound
from clipdex.serve.service import QueryTimeout, Service
from retrieval.cancel import Cancelled
from retrieval.errors import ClipdexError, IndexNotFound, InvalidFilter, ModelMismatch, TableNotFound
from retrieval.version import __version__

log = logging.getLogger(__name__)
OPEN_PATHS = ("/", "/dedup", "/healthz", "/static/", "/favicon.ico")
STATUS = [(NotFound, 404), (IndexNotFound, 404), (TableNotFound, 404), (TooLarge, 413), (QueryTimeout, 504),
          (Cancelled, 503), (InvalidFilter, 400), (ModelMismatch, 400), (ClipdexError, 400)]


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def create_app(config: ServeConfig, service: Service | None = None) -> FastAPI:
    """The app; ``service`` an already started ``Service`` (the CLI starts it first, so that a missing index is
    one error line rather than a failed start-up), else it starts with the app's lifespan."""
    config.check()
    started = service is not None
    service = service or Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not started:
            service.start()
        app.state.service = service
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="clipdex", version=__version__, lifespan=lifespan,
                  description="Search clipdex indexes by text, image, vector or example; clip-retrieval compatible.")
    app.state.config = config
    app.state.service = service
    _errors(app)
    _middleware(app, config)
    app.include_router(api.router)
    app.include_router(compat.router)
    app.include_router(dedup.router)
    static = resources.files("clipdex.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return Response((static / "index.html").read_bytes(), media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})

    @app.get("/dedup", include_in_schema=False)
    async def dedup_page():
        return Response((static / "dedup.html").read_bytes(), media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})

    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ClipdexError)
    async def clipdex_error(request: Request, exc: ClipdexError):
        status = next(code for cls, code in STATUS if isinstance(exc, cls))
        return error(status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path}"
        return error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValidationError)
    async def validation_error(request: Request, exc):
        return error(422, validation_message(exc.errors()))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); see the server's log")


def validation_message(errors) -> str:
    """Pydantic's error list -> one line: 'k: Input should be less than or equal to 1000; ...'."""
    parts = []
    for e in list(errors)[:3]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    return "bad request: " + "; ".join(parts)


def _middleware(app: FastAPI, config: ServeConfig) -> None:
    limit = body_limit(config.max_upload)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        cors = path in compat.PATHS
        if cors and request.method == "OPTIONS":
            response = Response(status_code=204)
        elif config.token and not _open(path) and not _authorized(request, config.token):
            response = error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN'",
                             {"WWW-Authenticate": "Bearer"})
        elif request.method in ("POST", "PUT") and "content-length" not in request.headers:
            response = error(411, "send the request body with a Content-Length (chunked bodies are refused)")
        elif _length(request) > limit:
            response = error(413, f"request body over {limit:,} bytes (upload limit {config.max_upload:,})")
        else:
            response = await call_next(request)
        if cors:
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Allow-Headers"] = "*"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        route = request.scope.get("route")
        service = getattr(request.app.state, "service", None)
        if service is not None:
            service.metrics.observe(request.method, getattr(route, "path", "other"), response.status_code,
                                    time.perf_counter() - t0)
        return response


def _length(request: Request) -> int:
    value = request.headers.get("content-length") or "0"
    return int(value) if value.isdigit() else 1 << 62   # a malformed length is refused as too large


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith("/static/")


def _authorized(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("token", "")
    return hmac.compare_digest(given.encode(), token.encode())

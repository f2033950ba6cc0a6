"""The web page and its JSON API (Starlette on uvicorn), calling the same core as the gRPC servicer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from crossbit.server.config import ServerConfig
from crossbit.server.core import RetrievalCore
from crossbit.server.core.exceptions import LimitError, NotFoundError
from crossbit.server.core.requests import Query, SearchResult
from crossbit.server.core.tokens import OPEN, TokenTable
from crossbit.server.rpc.errors import status_for
from crossbit.server.web.browse import Browser
from crossbit.server.web.guard import (
    BodyLimit,
    BodyTimeout,
    SecurityHeaders,
    allowed_hosts,
    body_timeout_response,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
               "NOT_FOUND": 404,
               "RESOURCE_EXHAUSTED": 413, "INTERNAL": 500, "UNAVAILABLE": 503,
               "DEADLINE_EXCEEDED": 504}
PLACEHOLDER = (b'<svg xmlns="http://www.w3.org/2000/svg" width="160" height="120">'
               b'<rect width="160" height="120" fill="#e5e7eb"/><text x="80" y="64" '
               b'font-family="sans-serif" font-size="12" text-anchor="middle" fill="#6b7280">'
               b'no thumbnail</text></svg>')


INT64_MAX = 2**63 - 1
HTTP_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND",
              405: "INVALID_ARGUMENT", 413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT"}


def error_response(exc: BaseException) -> JSONResponse:
    """The same meaning as the gRPC status, as JSON: {"error": {"code", "message"}}."""
    if isinstance(exc, BodyTimeout):
        return body_timeout_response(exc)
    if isinstance(exc, HTTPException) and exc.status_code < 500:  # Starlette's own refusals
        name = HTTP_CODES.get(exc.status_code, "INVALID_ARGUMENT")
        return JSONResponse({"error": {"code": name, "message": str(exc.detail)}},
                            status_code=exc.status_code)
    code, message = status_for(exc)
    if code.name == "INTERNAL":
        log.exception("web API call failed", exc_info=exc)
    return JSONResponse({"error": {"code": code.name, "message": message}},
                        status_code=HTTP_STATUS.get(code.name, 500))


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw[:40]!r}") from None
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise ValueError(f"{name} must fit in 64 bits, got {raw[:40]}")
    return value


def _item_id(raw) -> int:
    """An id from the path: one beyond int64 names no item (404), like an unknown one."""
    value = int(raw)
    if not 0 <= value <= INT64_MAX:
        raise NotFoundError(f"unknown id {raw}")
    return value


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes: never read whole."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise LimitError(f"the upload is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise LimitError(f"the upload is over {limit} bytes, the limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _flag(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    return raw.lower() in ("1", "true", "yes", "on")


def result_json(result: SearchResult, started: float) -> dict:
    return {"hits": [{"id": h.id, "key": h.key, "distance": h.distance, "score": h.score,
                      "metadata": h.metadata, "modality": h.modality} for h in result.hits],
            "bits": result.bits, "encode_ms": result.encode_ms, "search_ms": result.search_ms,
            "reranked": result.reranked, "total_ms": 1000 * (time.perf_counter() - started)}


def build_app(core: RetrievalCore, config: ServerConfig,
              tokens: TokenTable | None = None) -> Starlette:
    """The Starlette app: the page at /, the JSON API under /api/ (the same tokens and roles as
    the gRPC service; ``collection=`` on every route, default when absent)."""
    browser = Browser(core)
    tokens = tokens if tokens is not None else TokenTable(config.auth_token, config.tokens_file)

    def guarded(handler, action: str | None):
        async def endpoint(request: Request):
            try:
                who = tokens.authenticate(request.headers.getlist("authorization")) \
                    if tokens.enabled else OPEN
                collection = request.query_params.get("collection") or "default"
                if action is not None:
                    who.require(collection, action)
                return await handler(request, collection, who)
            except Exception as exc:  # mapped once, like the gRPC boundary
                return error_response(exc)
        return endpoint

    async def page(request: Request):
        return FileResponse(STATIC / "index.html", headers=page_headers)

    async def favicon(request: Request):
        return Response(FAVICON, media_type="image/svg+xml",
                        headers={"cache-control": "public, max-age=86400"})

    def query_params(request: Request, collection: str) -> dict:
        min_score = request.query_params.get("min_score")
        try:
            min_score = None if min_score in (None, "") else float(min_score)
        except ValueError:
            raise ValueError(f"min_score must be a number, got {min_score[:40]!r}") from None
        return {"top_k": _int(request, "k", config.default_top_k),
                "modality": request.query_params.get("modality", "image"),
                "rerank": _flag(request, "rerank"), "collection": collection,
                "filter": request.query_params.get("filter", ""),
                "offset": _int(request, "offset", 0), "min_score": min_score}

    async def search(request: Request, collection: str, who):
        started = time.perf_counter()
        params = query_params(request, collection)
        like = request.query_params.get("like")
        if like is not None:
            source = request.query_params.get("source", "image")
            like_id = _int(request, "like", 0)
            if like_id < 0:
                raise NotFoundError(f"unknown id {like_id}")
            result = await run_in_threadpool(browser.like, like_id, source, params["top_k"],
                                              params["modality"], None, collection,
                                              params["filter"], params["offset"],
                                              params["min_score"])
            return JSONResponse(result_json(result, started))
        text = request.query_params.get("q")
        if text is None:
            raise ValueError("give q=<text> or like=<id>")
        query = Query(text=text, nprobe=_int(request, "nprobe", 0), **params)
        result = await run_in_threadpool(core.search, query, 30.0)
        return JSONResponse(result_json(result, started))

    async def search_image(request: Request, collection: str, who):
        started = time.perf_counter()
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=16,
                                      max_part_size=config.max_image_bytes)
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise ValueError("send the image as the form field 'image'")
            data = await upload.read()
        else:
            data = await read_body(request, config.max_image_bytes)
        query = Query(image=data, **query_params(request, collection))
        result = await run_in_threadpool(core.search, query, 30.0)
        return JSONResponse(result_json(result, started))

    async def item(request: Request, collection: str, who):
        modality = request.query_params.get("modality", "image")
        found = browser.item(_item_id(request.path_params["item_id"]), modality, collection)
        found["thumbnail"] = (f"/api/items/{found['id']}/thumbnail?modality={modality}"
                              f"&collection={collection}")
        return JSONResponse(found)

    async def thumbnail(request: Request, collection: str, who):
        data = browser.thumbnail(_item_id(request.path_params["item_id"]),
                                 request.query_params.get("modality", "image"), collection)
        if data is None:
            return Response(PLACEHOLDER, media_type="image/svg+xml")
        return Response(data, media_type="image/jpeg",
                        headers={"cache-control": "private, max-age=3600"})

    async def preview(request: Request, collection: str, who):
        modality = request.query_params.get("modality", "image")
        item_id = _item_id(request.path_params["item_id"])
        data = browser.preview(item_id, modality, collection) or \
            browser.thumbnail(item_id, modality, collection)
        if data is None:
            return Response(PLACEHOLDER, media_type="image/svg+xml")
        return Response(data, media_type="image/jpeg",
                        headers={"cache-control": "private, max-age=3600"})

    async def items(request: Request, collection: str, who):
        modality = request.query_params.get("modality", "image")
        offset, limit = _int(request, "offset", 0), _int(request, "limit", 24)
        if offset > MAX_OFFSET:
            raise ValueError(f"offset must be at most {MAX_OFFSET}")
        order = request.query_params.get("order", "id")
        if order not in ("id", "newest"):
            raise ValueError(f"order must be 'id' or 'newest', got {order[:20]!r}")
        rows = browser.page(offset, limit, modality, order == "newest", collection)
        total = core.stats(collection)["images" if modality == "image" else "texts"]
        return JSONResponse({"items": rows, "offset": offset, "limit": limit, "total": total})

    async def count(request: Request, collection: str, who):
        modality = request.query_params.get("modality", "image")
        found = await run_in_threadpool(core.count, modality,
                                        request.query_params.get("filter", ""), collection)
        return JSONResponse({"count": found, "collection": collection, "modality": modality})

    async def stats(request: Request, collection: str, who):
        return JSONResponse(core.stats(collection))

    async def collections(request: Request, collection: str, who):
        return JSONResponse({"collections": [c for c in core.list_collections()
                                             if who.sees(c["name"])]})

    page_headers = {"content-security-policy": content_security_policy()}
    routes = [
        Route("/", page),
        Route("/favicon.ico", favicon),
        Route("/api/search", guarded(search, "search")),
        Route("/api/search/image", guarded(search_image, "search"), methods=["POST"]),
        Route("/api/items", guarded(items, "scroll")),
        Route("/api/items/{item_id:int}", guarded(item, "get")),
        Route("/api/items/{item_id:int}/thumbnail", guarded(thumbnail, "get")),
        Route("/api/items/{item_id:int}/preview", guarded(preview, "get")),
        Route("/api/count", guarded(count, "count")),
        Route("/api/stats", guarded(stats, "stats")),
        Route("/api/collections", guarded(collections, None)),
    ]
    app = Starlette(routes=routes)
    return SecurityHeaders(BodyLimit(app, config.max_image_bytes + (1 << 20),
                                     config.web_body_timeout_s), allowed_hosts(config))


MAX_OFFSET = 2**62
FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" '
           b'rx="3" fill="#2563eb"/><path d="M4 4h3v3H4zM9 9h3v3H9zM9 4h3v3H9z" fill="#fff"/></svg>')


def content_security_policy() -> str:
    """Only this page's own script and style run; no framing, no other origins."""
    html = (STATIC / "index.html").read_text()
    hashes = {kind: [_sha256(m) for m in re.findall(rf"<{kind}>(.*?)</{kind}>", html, re.S)]
              for kind in ("script", "style")}
    return ("default-src 'none'; img-src 'self' blob: data:; connect-src 'self'; "
            f"script-src {' '.join(hashes['script'])}; style-src {' '.join(hashes['style'])}; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the main program owns signals
        pass


def start_web(core: RetrievalCore, config: ServerConfig, tokens: TokenTable | None = None):
    """Serve the page on ``config.web_port`` in a background thread; returns (a stop function,
    the port bound)."""
    app = build_app(core, config, tokens)
    uv_config = uvicorn.Config(app, host=config.host, port=config.web_port, log_level="warning",
                               access_log=False,
                               ssl_certfile=config.tls_cert, ssl_keyfile=config.tls_key)
    server = _Server(uv_config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True,
                              name="crossbit-web")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise OSError(f"web page could not start on {config.host}:{config.web_port}")
    port = server.servers[0].sockets[0].getsockname()[1]  # the one bound (--web-port 0: any)
    log.info("web page on http://%s:%d", config.host, port)

    def stop():
        server.should_exit = True
        thread.join(timeout=10)

    return stop, port

"""HTTP plumbing of the Serve app (flows/serve_api.py): the request guard that runs before
FastAPI reads a request, and stored files as streamed responses."""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from infra import storage


class RequestGuard:
    """ASGI middleware that runs before FastAPI reads anything: the bearer token (401; the API
    docs and the pages, which hold no data, stay public) and the body size (413, by
    Content-Length and by the bytes that arrive)."""

    PUBLIC = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")

    def __init__(self, app, token: str | None, max_body_bytes: int, uploads: tuple[str, int] | None = None,
                 public: Callable[[str], bool] = lambda path: False) -> None:
        self.app = app
        self.token = token
        self.public = public  # further public paths (GET only)
        self.max_body_bytes = max_body_bytes
        self.uploads = uploads  # (path prefix, its own body limit): file uploads

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        public = path in self.PUBLIC or scope["method"] in ("GET", "HEAD") and self.public(path)
        if self.token and not public and not self._authorized(headers.get("authorization", "")):
            return await JSONResponse({"detail": "missing or invalid bearer token"}, 401,
                                      {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        limit = self.max_body_bytes
        if self.uploads is not None and path.startswith(self.uploads[0] + "/"):
            limit = self.uploads[1]
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return await JSONResponse({"detail": self._too_large(limit)}, 413)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # a body sent without Content-Length
                raise HTTPException(413, self._too_large(limit))
            return message

        await self.app(scope, limited_receive, send)

    def _authorized(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.token.encode())

    @staticmethod
    def _too_large(limit: int) -> str:
        return f"request body over {limit} bytes"


ECHO_CHARS = 200  # of an input echoed back in an error


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as an error may echo it: strings UTF-8-safe (lone surrogates and control
    characters escaped) and cut to :data:`ECHO_CHARS`, non-finite numbers as text, containers
    (three levels deep at most) element by element, anything else as its type name."""
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, int) or abs(value) < 1 << 53 else str(value)[:ECHO_CHARS]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        escaped = value.encode("utf-8", "backslashreplace").decode("utf-8")
        escaped = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in escaped)
        return escaped if len(escaped) <= ECHO_CHARS else escaped[:ECHO_CHARS] + "..."
    if depth < 3 and isinstance(value, dict):
        return {str(json_safe(k, depth + 1)): json_safe(v, depth + 1) for k, v in list(value.items())[:20]}
    if depth < 3 and isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value[:20]]
    return f"<{type(value).__name__}>"


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 in FastAPI's format, every echoed input made safe to serialise (NaN, 1e400, lone
    surrogates anywhere in a body would otherwise turn the answer into a 500)."""
    detail = [{k: json_safe(v) for k, v in e.items() if k in ("type", "loc", "msg", "input", "ctx")}
              for e in error.errors()]
    return JSONResponse({"detail": detail}, 422)


async def body_error(request: Request, error: StarletteHTTPException) -> Response:
    """FastAPI answers a body it cannot parse for a reason other than JSON syntax (JSON nested
    deeper than the parser's recursion limit) with 400; it is a malformed body like any other:
    422. Every other HTTP error keeps FastAPI's own answer."""
    if error.status_code == 400 and isinstance(error.__cause__, RecursionError):
        return JSONResponse({"detail": [{"type": "json_invalid", "loc": ["body"],
                                         "msg": "JSON nested too deeply"}]}, 422)
    return await http_exception_handler(request, error)


async def file_response(uri: str) -> StreamingResponse:
    """A stored file (local or s3://) as an HTTP response, read in blocks. The storage calls run in
    worker threads (the blocks too, as Starlette iterates a plain generator there), so a slow
    store never stalls the ingress's event loop."""
    fs, path = storage.filesystem(uri)

    def size() -> int | None:
        return fs.size(path) if fs.exists(path) else None

    length = await asyncio.to_thread(size)
    if length is None:
        raise HTTPException(404, "the file is no longer in storage")

    def blocks():
        with fs.open(path, "rb") as f:
            while block := f.read(1 << 20):
                yield block

    return StreamingResponse(blocks(), media_type="video/mp4", headers={"Content-Length": str(length)})

"""HTTP plumbing of the Serve app (flows/serve_api.py): the request guard that runs before
FastAPI reads a request, and stored files as streamed responses."""

from __future__ import annotations

import hmac

from fastapi import HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import Headers

from infra import storage


class RequestGuard:
    """ASGI middleware that runs before FastAPI reads anything: the bearer token (401; the API
    docs stay public) and the body size (413, by Content-Length and by the bytes that arrive)."""

    PUBLIC = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")

    def __init__(self, app, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        if self.token and path not in self.PUBLIC and not self._authorized(headers.get("authorization", "")):
            return await JSONResponse({"detail": "missing or invalid bearer token"}, 401,
                                      {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return await JSONResponse({"detail": self._too_large()}, 413)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:  # a body sent without Content-Length
                raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, limited_receive, send)

    def _authorized(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.token.encode())

    def _too_large(self) -> str:
        return f"request body over {self.max_body_bytes} bytes"


def file_response(uri: str) -> StreamingResponse:
    """A stored file (local or s3://) as an HTTP response, read in blocks."""
    fs, path = storage.filesystem(uri)
    if not fs.exists(path):
        raise HTTPException(404, "the file is no longer in storage")

    def blocks():
        with fs.open(path, "rb") as f:
            while block := f.read(1 << 20):
                yield block

    return StreamingResponse(blocks(), media_type="video/mp4", headers={"Content-Length": str(fs.size(path))})

"""The Serve app's web pages (flows/web/: plain HTML, CSS and JavaScript, no build step and no
network beyond this service) and the read-only batch endpoints behind the batch page.

    GET /                                   -> the page: make a video, watch it grow chunk by chunk
    GET /batches/{batch_id}                 -> the page of one batch's manifest
    GET /static/{name}                      -> the pages' scripts and styles
    GET /v1/batches                         -> the batches this service shows (ServeArgs.batches)
    GET /v1/batches/{batch_id}              -> its manifest's rows: status, stages, timings, metrics
    GET /v1/batches/{batch_id}/videos/{video_id}.png   -> a finished video's first frame, 160 px wide
    GET /v1/batches/{batch_id}/videos/{video_id}.mp4   -> a finished video

The pages themselves are public (they hold no data); everything they show comes from the API
with the bearer token the person enters, which the page keeps in session storage only.
"""

from __future__ import annotations

import asyncio
import io
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from flows.generate_batch import MANIFEST_NAME
from flows.serve_http import file_response, json_safe
from infra import storage
from infra.manifest import METRIC_COLUMNS, STAGE_STATUS_COLUMNS, TIMING_COLUMNS, BatchManifest
from infra.video_io import first_frame

WEB = files("flows") / "web"
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml"}
PAGE_PATHS = ("/", "/batches/", "/static/")  # public: the pages and their assets (RequestGuard)
THUMBNAIL_WIDTH = 160
ROW_COLUMNS = ("video_id", "prompt", "status", *STAGE_STATUS_COLUMNS, "num_frames", "seed", "chunks_done",
               "chunks_total", "attempts", "error", *TIMING_COLUMNS, *METRIC_COLUMNS, "updated_at")

BatchId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="a batch id (the manifest's batch_id)")]
VideoId = Annotated[str, Path(pattern=r"^[0-9a-f]{8,64}$", description="a video id")]

pages = APIRouter(include_in_schema=False)
batches = APIRouter(prefix="/v1/batches", tags=["batches"])


def is_public(path: str) -> bool:
    """Whether ``path`` is a page or a page asset (served without the token)."""
    return path == "/" or any(path.startswith(p) for p in PAGE_PATHS[1:])


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((WEB / name).read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})


@pages.get("/")
async def index_page() -> HTMLResponse:
    return _page("index.html")


@pages.get("/batches/{batch_id}")
async def batch_page(batch_id: BatchId) -> HTMLResponse:
    return _page("batch.html")


@pages.get("/static/{name}")
async def static_file(name: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]*\.(js|css|svg)$")]) -> Response:
    resource = WEB / name
    if not resource.is_file():
        raise HTTPException(404, f"no static file {name}")
    return Response(resource.read_bytes(), media_type=STATIC_TYPES[name[name.rindex("."):]],
                    headers={"Cache-Control": "no-cache"})


# --- batches -----------------------------------------------------------------------------------------

def _manifests(uris: list[str]) -> dict[str, tuple[str, BatchManifest]]:
    """batch_id -> (output URI, manifest) of every configured batch output that has a manifest."""
    found: dict[str, tuple[str, BatchManifest]] = {}
    for uri in uris:
        manifest_uri = storage.join(uri, MANIFEST_NAME)
        if storage.exists(manifest_uri):
            manifest = BatchManifest.read(manifest_uri)
            found.setdefault(manifest.batch_id, (uri, manifest))
    return found


async def _batch(request: Request, batch_id: str) -> tuple[str, BatchManifest]:
    found = await asyncio.to_thread(_manifests, request.app.state.api.args.batches)
    if batch_id not in found:
        raise HTTPException(404, f"no batch {batch_id} among this service's batches (ServeArgs.batches)")
    return found[batch_id]


def _counts(manifest: BatchManifest) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in manifest.rows.values():
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


@batches.get("", name="list_batches")
async def list_batches(request: Request) -> dict:
    """The batch outputs this service shows (``batches`` in its arguments) that hold a manifest."""
    found = await asyncio.to_thread(_manifests, request.app.state.api.args.batches)
    return {"batches": [{"batch_id": batch_id, "uri": uri, "videos": len(manifest), "counts": _counts(manifest),
                         "page_url": request.url_for("batch_page", batch_id=batch_id).path}
                        for batch_id, (uri, manifest) in found.items()]}


def _row(request: Request, batch_id: str, row: dict[str, Any]) -> dict[str, Any]:
    out = {name: json_safe(row[name]) for name in ROW_COLUMNS if name != "updated_at"}
    out["updated_at"] = row["updated_at"].isoformat()
    finished = row["status"] == "done" and row["video_uri"] is not None
    links = ("thumbnail_url", "batch_thumbnail"), ("video_url", "batch_video")
    out.update({key: request.url_for(route, batch_id=batch_id, video_id=row["video_id"]).path if finished else None
                for key, route in links})
    return out


@batches.get("/{batch_id}", name="batch_rows")
async def batch_rows(request: Request, batch_id: BatchId) -> dict:
    """One batch's rows in request order: prompt, status and stage statuses, chunks, timings (s),
    metrics, and URLs of each finished video and its thumbnail."""
    uri, manifest = await _batch(request, batch_id)
    return {"batch_id": batch_id, "uri": uri, "counts": _counts(manifest),
            "rows": [_row(request, batch_id, row) for row in manifest.rows.values()]}


async def _video_uri(request: Request, batch_id: str, video_id: str) -> str:
    _, manifest = await _batch(request, batch_id)
    row = manifest.rows.get(video_id)
    if row is None or row["status"] != "done" or row["video_uri"] is None:
        raise HTTPException(404, f"no finished video {video_id} in batch {batch_id}")
    return row["video_uri"]


@batches.get("/{batch_id}/videos/{video_id}.png", name="batch_thumbnail")
async def batch_thumbnail(request: Request, batch_id: BatchId, video_id: VideoId) -> Response:
    """The video's first frame as a PNG, :data:`THUMBNAIL_WIDTH` pixels wide."""
    uri = await _video_uri(request, batch_id, video_id)

    def thumbnail() -> bytes:
        from PIL import Image

        image = Image.fromarray(first_frame(uri))
        height = max(1, round(image.height * THUMBNAIL_WIDTH / image.width))
        out = io.BytesIO()
        image.resize((THUMBNAIL_WIDTH, height), Image.Resampling.BICUBIC).save(out, format="PNG")
        return out.getvalue()

    try:
        png = await asyncio.to_thread(thumbnail)
    except FileNotFoundError:
        raise HTTPException(404, "the video is no longer in storage") from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@batches.get("/{batch_id}/videos/{video_id}.mp4", name="batch_video", response_class=StreamingResponse)
async def batch_video(request: Request, batch_id: BatchId, video_id: VideoId) -> StreamingResponse:
    """A finished video of the batch."""
    return await file_response(await _video_uri(request, batch_id, video_id))

"""Text to long video over HTTP: a Ray Serve application for single requests.

    serve run serve_config.yaml                          # the GPU cluster of ray_cluster.yaml
    serve run flows.serve_api:app root=outputs/serve auth=none   # local, tiny preset, no token

Endpoints (JSON unless noted; the OpenAPI schema is at /openapi.json):

    POST   /v1/videos                      -> 202 {id, status_url, stream_url, video_url}
    GET    /v1/videos/{id}                 -> status, stage, chunks_done/chunks_total, timings, error
    GET    /v1/videos/{id}/stream          -> server-sent events: chunk ..., then done | failed | cancelled
    GET    /v1/videos/{id}/chunks/{k}.mp4  -> the frames low-res chunk k appended to the video (MP4)
    GET    /v1/videos/{id}.mp4             -> the final video (409 until it is done)
    GET    /v1/videos?limit=50             -> the most recently submitted jobs, newest first
    GET    /v1/service                     -> preset, active jobs, calls in flight, open streams, limits
    DELETE /v1/videos/{id}                 -> cancel (within one denoising step)
    DELETE /v1/videos/{id}?purge=true      -> remove a finished job and its files

Web pages (flows/serve_pages.py): ``/`` makes a video and plays its chunks as they arrive;
``/batches/{batch_id}`` shows a batch manifest's rows (the batch outputs named in ``batches``).

Three deployments:

* ``VideoAPI`` (FastAPI ingress): validates requests and hands accepted ones to the owner. It
  holds no job state, so a restarted ingress loses nothing.
* ``JobOwner`` (flows/serve_jobs.py; one replica, fixed): the only writer of the jobs' state, an
  :class:`infra.jobs.JobBoard` over the manifest ``<root>/manifest.parquet`` (local path or
  ``s3://``, committed atomically on every change), and the dispatcher of queued jobs. A
  restarted application reads it back: finished jobs keep answering, queued jobs are dispatched
  again, running ones keep running if their generator is alive and are queued again (resuming)
  once their lease expires. It bounds the queue: at most ``max_queue`` jobs queued or running,
  beyond that 429 with ``Retry-After`` (a job cancelled while queued leaves at once).
* ``Generator`` (no GPU, no model): one call per job, which submits the video to the cluster's
  engine (stages/engine.py) as an interactive request and relays its progress to the owner: the
  start, every finished low-res chunk (its MP4 written by the worker that made it) and the end;
  it also passes the owner's cancellation on, and asks the owner twice a second whether to stop,
  which keeps the job's lease. The engine's init, extend and refine pools make the video, shared
  with batch runs, interactive requests first within a bounded share (``interactive_share``);
  refinement runs pipeline-parallel over the refine pool. Chunk latents are saved as they finish
  (the run store), so a lost, failed or cancelled job that runs again resumes after its last
  finished chunk, and a relay that dies leaves the engine's work going: the job's next attempt
  attaches to it.

Streaming: server-sent events that carry the URL of a small MP4 per chunk, rather than one
growing fragmented MP4 or a WebSocket. SSE is plain HTTP (proxies, ``curl -N``, the browser's
EventSource, automatic reconnection), each chunk is a complete playable file that exists as soon
as the chunk does, and the events also name each chunk's frame range, so a client can play,
skip or stitch chunks as it likes. Event data is JSON: ``chunk`` {index, frames: [start, stop),
url, chunks_total, status}; ``done`` {video_url, ...}; ``failed`` / ``cancelled`` {error, ...}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from pydantic import BaseModel, ConfigDict, Field, field_validator
import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from flows.serve_http import RequestGuard, body_error, file_response, json_safe, validation_error
from flows.serve_jobs import JobOwner
from flows.serve_pages import batches as batch_router
from flows.serve_pages import is_public, pages
from infra import storage
from infra.cluster import ClusterConfig
from infra.init_media import is_staged, readable_frames, stage_bytes, stage_request, staged_uri
from infra.params import body_model
from infra.jobs import chunk_video_uri
from infra.run_store import RunStore
from models.errors import ConfigError, require
from models.request import MIN_FRAMES, NOT_PARAMETERS, GenerationRequest
from stages.engine import EngineOptions, connect_engine
from stages.sources import ModelSources
from stages.workers import VideoJob

LOG = logging.getLogger("ray.serve")
TOKEN_ENV = "STREAMINGT2V_API_TOKEN"
KEEPALIVE_S = 15.0  # an SSE comment this often keeps idle proxies from closing the stream


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


class ServeArgs(BaseModel):
    """The application's arguments (``args:`` in serve_config.yaml, ``key=value`` after
    ``serve run flows.serve_api:app``). Caps default from STREAMINGT2V_MAX_* environment variables."""

    model_config = ConfigDict(extra="forbid")

    root: str = "outputs/serve"  # manifest, videos and chunks: a local directory or s3://bucket/prefix
    preset: str = "tiny"  # the one preset this service runs; requests must name it
    base_model: str | None = None
    streaming_model: str | None = None
    refiner: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    low_memory: bool = False  # refine streams the long video through CPU memory (stages.residency)
    pools: str = "local"  # ClusterConfig profile or YAML: the engine's pools, shared with batch runs
    interactive_share: float = Field(0.75, gt=0, le=1, allow_inf_nan=False)  # of each stage's starts while batch videos wait
    max_queue: int = Field(default_factory=lambda: _env_int("STREAMINGT2V_MAX_QUEUE", 8), ge=1)
    max_frames: int = Field(default_factory=lambda: _env_int("STREAMINGT2V_MAX_FRAMES", 1200), ge=MIN_FRAMES)
    max_body_bytes: int = Field(default_factory=lambda: _env_int("STREAMINGT2V_MAX_BODY_BYTES", 16 * 1024), ge=1)
    # init_video / init_image: uploads (POST /v1/inputs/{kind}) up to this size, or URIs under these prefixes
    max_upload_bytes: int = Field(default_factory=lambda: _env_int("STREAMINGT2V_MAX_UPLOAD_BYTES", 64 * 2**20), ge=1)
    input_prefixes: list[str] = Field(default_factory=list)  # e.g. ["s3://bucket/clips/"]; none by default
    # batch outputs (generate-batch's output_uri) whose manifests the page /batches/{id} shows
    batches: list[str] = Field(default_factory=lambda: ["outputs/batch"])
    max_steps: int = Field(default_factory=lambda: _env_int("STREAMINGT2V_MAX_STEPS", 100), ge=1)  # DDIM steps
    max_guidance: float = Field(30.0, gt=0, allow_inf_nan=False)  # each guidance weight
    retry_after_s: int = Field(10, ge=1)
    lease_s: float = Field(60.0, gt=0, allow_inf_nan=False)  # a running job silent this long is queued again
    max_redispatch: int = Field(2, ge=0)  # times a lost job is queued again before it fails
    retention_h: float = Field(default_factory=lambda: float(os.environ.get("STREAMINGT2V_RETENTION_H", 168)), ge=0,
                               allow_inf_nan=False)  # finished jobs' files and rows are removed after this; 0 keeps them
    max_streams: int = Field(64, ge=1)  # open SSE streams in all; beyond them 429 (status polling still answers)
    max_streams_per_job: int = Field(4, ge=1)
    api_token: str | None = None  # else the STREAMINGT2V_API_TOKEN environment variable of the API replicas
    auth: Literal["token", "none"] = "token"  # none: serve without a token (a loopback or trusted network only)

    @field_validator("input_prefixes", "batches", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """``serve run ... batches=a,b`` gives one string: a comma-separated list."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    def token(self, environ: Mapping[str, str] = os.environ) -> str | None:
        """The bearer token (stripped) this service requires, or None with ``auth: none``. A
        service that should require one but has none (unset, empty or blank) refuses to start
        rather than serve without auth."""
        token = (self.api_token if self.api_token is not None else environ.get(TOKEN_ENV, "")).strip()
        if self.auth == "none":
            if token:
                raise ConfigError("auth", self.auth, f"'token' when a token is given (api_token or {TOKEN_ENV})")
            return None
        if not token:
            raise ConfigError("api_token", self.api_token, f"a non-blank bearer token (api_token, or {TOKEN_ENV} in "
                              "the API replicas' environment), or auth=none to serve without auth")
        return token


VideoBody = body_model(GenerationRequest, "VideoBody", exclude=NOT_PARAMETERS, doc=(
    "The body of ``POST /v1/videos``: the parameters of :class:`models.request.GenerationRequest` (its "
    "defaults apply), which checks their ranges."))


@serve.deployment(max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class Generator:
    """One job per call, made by the cluster's engine (stages/engine.py): it submits the video as
    an interactive request, relays the engine's progress to the owner (the start, every finished
    chunk, the end) and the owner's cancellation to the engine. It holds no model: the engine's
    init, extend and refine pools make the video, shared with batch runs."""

    def __init__(self, root: str, sources: ModelSources, cluster: ClusterConfig, options: EngineOptions,
                 poll_s: float = 0.5) -> None:
        # The owner dispatches to this deployment, so it is looked up by name, not bound (no cycle).
        self.owner = serve.get_deployment_handle("JobOwner", serve.get_replica_context().app_name)
        self.root, self.poll_s = root, poll_s
        self.client = f"serve:{root}"
        self.engine = connect_engine(sources, cluster, options)
        self.fingerprint = sources.fingerprint()

    async def models(self) -> str | None:
        """The fingerprint of the models the engine runs (ModelSources.fingerprint)."""
        return self.fingerprint

    async def run(self, params: dict, attempt: int) -> str:
        # The relay runs in a thread: the replica's event loop stays free for other jobs' calls.
        return await asyncio.to_thread(self._run, GenerationRequest(**params, force=True), attempt)

    def _run(self, request: GenerationRequest, attempt: int) -> str:
        video_id = request.video_id
        job = VideoJob(request.params(), self.root, previews=True)

        def ask(method: str, *args: Any) -> Any:
            return getattr(self.owner, method).remote(video_id, attempt, *args).result()

        def submit() -> dict:
            return self._engine("submit", [job], "interactive", self.client)[0]

        def next_snapshot(snap: dict) -> dict:
            """The video's next snapshot (or the same one after ``poll_s``); a video the engine no
            longer knows (it was restarted) is submitted again and resumes from its store."""
            changed = self._engine("watch", [video_id], {video_id: snap["version"]}, self.poll_s)
            if changed and changed[0]["status"] == "unknown":
                return submit()
            return changed[0] if changed else snap

        def stop_asked() -> str | None:
            """None, or why this attempt stops: 'cancelled' (the engine is told) or 'superseded'."""
            if not ask("should_stop"):  # also renews the job's lease
                return None
            job_now = self.owner.view.remote(video_id).result()
            if job_now is None or job_now["cancel_requested"] or job_now["status"] == "cancelled":
                self._engine("cancel", [video_id], self.client)
                return "cancelled"
            return "superseded"  # a later attempt (or the job's end) took over: the engine's work goes on

        snap = submit()
        while snap["status"] == "queued":  # waiting for a free worker: the job stays queued
            if (why := stop_asked()) is not None:
                return why
            snap = next_snapshot(snap)
        if not ask("start", request.extend_plan()):
            return "not started"
        reported = 0
        while True:
            for index in range(reported, snap["chunks_done"]):
                ask("chunk_done", index, {})
                reported = index + 1
            if snap["status"] == "cancelled" and not snap["cancel_requested"] and stop_asked() is None:
                snap = submit()  # another submitter withdrew it: this job still wants it
                continue
            if snap["status"] in ("done", "failed", "cancelled"):
                break
            if (why := stop_asked()) == "superseded":
                return why
            snap = next_snapshot(snap)
        if snap["status"] == "done":
            artifacts = {**RunStore(self.root, video_id).manifest_artifacts(), "models": self.fingerprint}
            ask("finish", "done", None, snap["timings"], artifacts)
        elif snap["status"] == "failed":
            LOG.error("job %s attempt %d failed: %s", video_id, attempt, snap["error"])
            ask("finish", "failed", snap["error"])
        else:
            ask("finish", "cancelled")
        return snap["status"]

    def _engine(self, method: str, *args: Any) -> Any:
        return ray.get(getattr(self.engine, method).remote(*args))


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class VideoAPI:
    """The HTTP ingress; its FastAPI app (:func:`http_app`) is built on the replica, where the
    token and the limits are known."""

    def __init__(self, owner: DeploymentHandle, args: ServeArgs, sources: ModelSources) -> None:
        self.owner = owner
        self.tokenizer = sources.load_tokenizer()  # the generators' tokenizer: prompts are checked before a job exists
        self.args = args
        self.token = args.token()
        self.streams: dict[str, int] = {}  # open SSE streams per job
        self.streams_total = 0

    def __serve_build_asgi_app__(self) -> FastAPI:
        return http_app(self)


# --- HTTP ---------------------------------------------------------------------------------------

ID_DIGITS = len(GenerationRequest("any").video_id)
VideoId = Annotated[str, Path(pattern=rf"^[0-9a-f]{{{ID_DIGITS}}}$",
                              description=f"the job id: a video_id ({ID_DIGITS} hex digits)")]
FINISHED = ("done", "failed", "cancelled")
router = APIRouter(prefix="/v1/videos", tags=["videos"])
service_router = APIRouter(prefix="/v1", tags=["service"])


def http_app(api: VideoAPI) -> FastAPI:
    app = FastAPI(title="StreamingT2V", version="1",
                  summary="Text to long video: submit, follow chunk by chunk, download, cancel.")
    app.state.api = api
    app.add_middleware(RequestGuard, token=api.token, max_body_bytes=api.args.max_body_bytes,
                       uploads=(UPLOADS, api.args.max_upload_bytes), public=is_public)
    app.add_exception_handler(ConfigError, _config_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, body_error)
    app.include_router(router)
    app.include_router(service_router)
    app.include_router(batch_router)
    app.include_router(pages)
    return app


async def _config_error(request: Request, error: ConfigError) -> JSONResponse:
    """A parameter out of range: 422 in FastAPI's own error format, naming the field and the range."""
    detail = {"type": "config_error", "loc": ["body", error.field], "msg": str(error),
              "input": json_safe(error.value), "allowed": error.allowed}
    return JSONResponse({"detail": [detail]}, 422)


def generation_request(body: VideoBody, args: ServeArgs) -> GenerationRequest:
    """The validated request; this service's own limits come first."""
    if body.num_frames > args.max_frames:
        raise ConfigError("num_frames", body.num_frames, f"an integer in [{MIN_FRAMES}, {args.max_frames}] "
                          "(this service's limit)")
    if body.preset != args.preset:
        raise ConfigError("preset", body.preset, f"{args.preset!r} (the preset this service runs)")
    request = GenerationRequest(**body.model_dump(), force=True)  # force: max_frames above is the upper bound
    for name in ("init_video", "init_image"):
        value = getattr(request, name)
        if value and not is_staged(value) and not any(value.startswith(p) for p in args.input_prefixes if p):
            raise ConfigError(name, value, f"a reference returned by POST {UPLOADS}/{name.removeprefix('init_')}, or "
                              f"a URI under one of this service's input_prefixes {args.input_prefixes}")
    for name in ("num_inference_steps", "refine_steps"):
        if getattr(request, name) > args.max_steps:
            raise ConfigError(name, getattr(request, name), f"an integer in [1, {args.max_steps}] (this service's limit)")
    for name in ("guidance_text", "guidance_anchor", "refine_guidance"):
        if getattr(request, name) > args.max_guidance:
            raise ConfigError(name, getattr(request, name), f"a number in [0, {args.max_guidance:g}] (this service's "
                              "limit)")
    return request


def _links(request: Request, job: dict) -> dict:
    """The job as the API shows it: storage URIs and bookkeeping replaced by URLs."""
    video_id = job["id"]
    chunks = [{**c, "url": request.url_for("chunk_video", video_id=video_id, index=c["index"]).path}
              for c in job["chunks"]]
    public = {k: v for k, v in job.items() if k not in ("version", "video_uri")}
    return {**public, "chunks": chunks,
            "status_url": request.url_for("video_status", video_id=video_id).path,
            "stream_url": request.url_for("video_stream", video_id=video_id).path,
            "video_url": request.url_for("video_file", video_id=video_id).path}


async def _job(request: Request, video_id: str) -> dict:
    job = await request.app.state.api.owner.view.remote(video_id)
    if job is None:
        raise HTTPException(404, f"no video {video_id}")
    return job


@router.post("", status_code=202, responses={413: {}, 422: {}, 429: {"description": "queue full; see Retry-After"},
                                             503: {"description": "job state not saved; see Retry-After"}})
async def submit_video(body: VideoBody, request: Request) -> JSONResponse:
    """Queue one video; 202 with its id and URLs.

    The id is computed by the server: the request's ``video_id``, a hash of every parameter.
    Submitting the same parameters again is idempotent: it returns the same job, queued, running
    or done, and starts no new work. A failed or cancelled job is queued again and resumes after
    its last finished chunk.
    """
    api = request.app.state.api
    generation = generation_request(body, api.args)
    generation.check_prompt_length(api.tokenizer)  # 422 now, not a queued job that fails
    if generation.init_video or generation.init_image:  # copied by content hash beside the outputs
        generation = await asyncio.to_thread(stage_request, generation, api.args.root)
    params = generation.params()
    submitted = await api.owner.submit.remote(params)
    if "queue_full" in submitted:
        return JSONResponse({"detail": f"queue full: {submitted['queue_full']}; retry later"}, 429,
                            {"Retry-After": str(api.args.retry_after_s)})
    if "unavailable" in submitted:
        return _unavailable(submitted["unavailable"], api.args.retry_after_s)
    job = _links(request, submitted["job"])
    reply = {k: job[k] for k in ("id", "status", "status_url", "stream_url", "video_url")}
    return JSONResponse(reply, 202, {"Location": job["status_url"]})


UPLOADS = "/v1/inputs"


@service_router.post("/inputs/{kind}", name="upload_input", status_code=201, responses={413: {}, 422: {}})
async def upload_input(kind: Literal["video", "image"], extension: str, request: Request) -> JSONResponse:
    """Upload a clip or an image (the raw file as the body; ``extension`` such as ``.mp4`` or
    ``.png``) to start videos from: 201 with the ``ref`` to give as ``init_video`` /
    ``init_image`` (``sha256:<hex><extension>``: the same bytes always give the same ref) and, for
    a clip, its frame count."""
    root = request.app.state.api.args.root
    field = f"init_{kind}"
    data = await request.body()
    require(len(data) > 0, field, "0 bytes", "a non-empty file")

    def stage() -> dict:
        ref = stage_bytes(data, extension, root, field)
        uri = staged_uri(root, ref)
        try:
            frames = readable_frames(uri, field)
        except ConfigError:
            storage.remove(uri)
            raise
        return {"ref": ref, "frames": frames}

    return JSONResponse(await asyncio.to_thread(stage), 201)


@service_router.get("/service", name="service_status")
async def service_status(request: Request) -> dict:
    """The service's load: jobs queued or running (at most ``max_queue``), generation calls in
    flight, open event streams, and the limits."""
    api = request.app.state.api
    limits = {name: getattr(api.args, name) for name in ("max_queue", "max_frames", "max_steps", "max_guidance",
                                                          "max_streams")}
    return {**await api.owner.load.remote(), "preset": api.args.preset, "open_streams": api.streams_total, **limits}


@router.get("", name="recent_videos")
async def recent_videos(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict:
    """The most recently submitted jobs (at most ``limit``), newest first, each as its status."""
    jobs = await request.app.state.api.owner.recent.remote(limit)
    return {"jobs": [_links(request, job) for job in jobs]}


@router.get("/{video_id}.mp4", name="video_file", response_class=StreamingResponse)
async def video_file(request: Request, video_id: VideoId) -> StreamingResponse:
    """The final video; 409 until the job is done."""
    job = await _job(request, video_id)
    if job["status"] != "done":
        raise HTTPException(409, f"video {video_id} is {job['status']}, not done")
    return await file_response(job["video_uri"])


@router.get("/{video_id}/chunks/{index}.mp4", name="chunk_video", response_class=StreamingResponse)
async def chunk_video(request: Request, index: int, video_id: VideoId) -> StreamingResponse:
    """The frames low-res chunk ``index`` appended to the video, as soon as the chunk exists."""
    job = await _job(request, video_id)
    if not 0 <= index < job["chunks_done"]:
        raise HTTPException(404, f"chunk {index} of video {video_id} is not finished ({job['chunks_done']} are)")
    return await file_response(chunk_video_uri(request.app.state.api.args.root, video_id, index))


@router.get("/{video_id}/stream", name="video_stream", response_class=StreamingResponse,
            responses={429: {"description": "too many open streams; see Retry-After"}})
async def video_stream(request: Request, video_id: VideoId) -> StreamingResponse:
    """Server-sent events: ``chunk`` for every finished low-res chunk, in order, as soon as it
    exists; then one of ``done``, ``failed``, ``cancelled``. A client reconnecting with
    ``Last-Event-ID: k`` gets the chunks after k. Open streams are capped per job and in all
    (429 beyond: the status endpoint keeps answering)."""
    api = request.app.state.api
    job = await _job(request, video_id)
    last = request.headers.get("last-event-id", "")
    sent = int(last) + 1 if last.isdigit() and len(last) < 9 else 0  # a reconnecting client resumes after it
    if api.streams_total >= api.args.max_streams or api.streams.get(video_id, 0) >= api.args.max_streams_per_job:
        return JSONResponse({"detail": f"too many open streams (at most {api.args.max_streams}, "
                             f"{api.args.max_streams_per_job} per job); poll {video_id}'s status or retry later"},
                            429, {"Retry-After": str(api.args.retry_after_s)})
    slot = StreamSlot(api, video_id)  # taken now, before any await: concurrent requests see it
    return StreamingResponse(_counted(slot, _events(request, job, sent)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                             background=BackgroundTask(slot.release))


class StreamSlot:
    """One open event stream of a job, counted from the moment it is admitted until it ends: its
    events finish, the client goes away, or the response is dropped before it started."""

    def __init__(self, api: "VideoAPI", video_id: str) -> None:
        self.api, self.video_id, self.held = api, video_id, True
        api.streams_total += 1
        api.streams[video_id] = api.streams.get(video_id, 0) + 1

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self.api.streams_total -= 1
        self.api.streams[self.video_id] -= 1
        if not self.api.streams[self.video_id]:
            del self.api.streams[self.video_id]

    def __del__(self) -> None:
        self.release()


async def _counted(slot: StreamSlot, events):
    """The events, while ``slot`` is held."""
    try:
        async for event in events:
            yield event
    finally:
        slot.release()


async def _events(request: Request, job: dict, sent: int = 0):
    owner = request.app.state.api.owner
    while True:
        for chunk in _links(request, job)["chunks"][sent:]:
            data = {**chunk, "chunks_total": job["chunks_total"], "status": job["status"]}
            yield f"event: chunk\nid: {chunk['index']}\ndata: {json.dumps(data)}\n\n"
        sent = max(sent, len(job["chunks"]))
        if job["status"] in FINISHED:
            yield f"event: {job['status']}\ndata: {json.dumps(_links(request, job))}\n\n"
            return
        version = job["version"]
        while (job := await owner.watch.remote(job["id"], version, KEEPALIVE_S))["version"] == version:
            yield ": keep-alive\n\n"


@router.get("/{video_id}", name="video_status")
async def video_status(request: Request, video_id: VideoId) -> dict:
    """Status (queued, running, done, failed, cancelled), stage, chunks, timings and error."""
    return _links(request, await _job(request, video_id))


@router.delete("/{video_id}", responses={409: {"description": "already done or failed (cancel); not finished (purge)"},
                                         503: {"description": "job state not saved; see Retry-After"}})
async def cancel_video(request: Request, video_id: VideoId, purge: bool = False) -> JSONResponse:
    """Cancel: a queued job at once (200), a running one within one denoising step (202; its
    status turns cancelled when the generator has stopped and freed its replica). With
    ``purge=true``: remove a finished (done, failed or cancelled) job and its files (200); the
    service also does so by itself ``retention_h`` hours after a job finished."""
    job = await _job(request, video_id)
    if purge:
        return await _purge(request, job)
    if job["status"] in ("done", "failed"):
        raise HTTPException(409, f"video {video_id} is {job['status']}: nothing to cancel")
    job = await request.app.state.api.owner.cancel.remote(video_id)
    if "unavailable" in job:
        return _unavailable(job["unavailable"], request.app.state.api.args.retry_after_s)
    if job["status"] in ("done", "failed"):  # it finished between the check above and the cancel
        raise HTTPException(409, f"video {video_id} is {job['status']}: nothing to cancel")
    return JSONResponse(_links(request, job), 202 if job["status"] == "running" else 200)


async def _purge(request: Request, job: dict) -> JSONResponse:
    video_id = job["id"]
    if job["status"] not in FINISHED:
        raise HTTPException(409, f"video {video_id} is {job['status']}: cancel it first, then purge it")
    purged = await request.app.state.api.owner.purge.remote(video_id)
    if "unavailable" in purged:
        return _unavailable(purged["unavailable"], request.app.state.api.args.retry_after_s)
    if not purged["purged"]:  # resubmitted between the check and the purge
        raise HTTPException(409, f"video {video_id} is no longer finished")
    return JSONResponse({"id": video_id, "status": "purged"}, 200)


def _unavailable(reason: str, retry_after_s: int) -> JSONResponse:
    """503: the job state could not be saved, and nothing changed."""
    return JSONResponse({"detail": reason}, 503, {"Retry-After": str(retry_after_s)})


# --- the application ------------------------------------------------------------------------------

def app(args: dict) -> serve.Application:
    """The application builder that serve_config.yaml names (``import_path: flows.serve_api:app``)."""
    config = ServeArgs.model_validate(args)
    if config.auth == "none" or config.api_token is not None:  # else the replicas' environment gives it
        config.token()
    sources = ModelSources(preset=config.preset, base_model=config.base_model, streaming_model=config.streaming_model,
                           refiner=config.refiner, device=config.device, dtype=config.dtype,
                           low_memory=config.low_memory)
    cluster = ClusterConfig.load(config.pools)
    generator = Generator.bind(config.root, sources, cluster, EngineOptions(interactive_share=config.interactive_share),
                               min(0.5, config.lease_s / 4))
    owner = JobOwner.bind(config.root, config.max_queue, generator, config.lease_s, config.max_redispatch,
                          config.retention_h * 3600)
    return VideoAPI.bind(owner, config, sources)

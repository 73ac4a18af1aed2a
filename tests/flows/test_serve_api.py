"""The Ray Serve endpoint on a real local Serve instance (127.0.0.1, an explicit free port, tiny
preset): submit -> stream -> fetch, the bounded queue, cancellation, bad input, bearer-token
auth, and a restart that still answers for finished jobs."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from infra.cluster import GPU
from infra.jobs import CANCELLED, INTERRUPTED, JobBoard, QueueFull
from infra.video_io import read_video
from models.chunk_plan import ChunkPlan
from models.request import GenerationRequest

TINY = dict(refine=False, num_inference_steps=2)  # a 16-frame chunk in about a second on 2 cores
QUICK = dict(num_frames=16, refine=False, num_inference_steps=1)
LONG = dict(num_frames=1200, **TINY)  # 149 chunks (the service limit): minutes; every test cancels it
REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"
MAX_QUEUE = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    port: int
    root: str
    headers: dict = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers=self.headers, trust_env=False,
                            timeout=120)

    def deploy(self, **args) -> None:
        from ray import serve

        from flows.serve_api import app

        serve.start(http_options={"host": "127.0.0.1", "port": self.port})
        serve.run(app({"root": self.root, "max_queue": MAX_QUEUE, "retry_after_s": 3,
                       **({"auth": "none"} if "api_token" not in args else {}), **args}), name="streamingt2v",
                  route_prefix="/")


@pytest.fixture(scope="module")
def service(ray_local, tmp_path_factory):
    from ray import serve

    served = Service(_free_port(), str(tmp_path_factory.mktemp("serve")))
    served.deploy()
    yield served
    serve.shutdown()


@pytest.fixture()
def client(service):
    with service.client() as c:
        yield c


def submit(client: httpx.Client, prompt: str = "A camel resting on the snow field.", **params) -> dict:
    response = client.post("/v1/videos", json={"prompt": prompt, **params})
    assert response.status_code == 202, response.text
    return response.json()


def events(client: httpx.Client, video_id: str):
    """The job's server-sent events as (event, data), until the stream ends."""
    with client.stream("GET", f"/v1/videos/{video_id}/stream") as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):  # keep-alive
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif fields:
                yield fields["event"], json.loads(fields["data"])
                fields = {}


def finish(client: httpx.Client, video_id: str) -> tuple[str, dict]:
    """Follow the stream to the job's last event."""
    *_, last = events(client, video_id)
    return last


def frames_of(client: httpx.Client, url: str, tmp_path, name: str) -> int:
    response = client.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    path = tmp_path / name
    path.write_bytes(response.content)
    return read_video(str(path)).shape[0]


@pytest.mark.integration
def test_submit_stream_then_fetch(client, tmp_path):
    job = submit(client, num_frames=40, seed=1, **TINY)
    assert set(job) == {"id", "status", "status_url", "stream_url", "video_url"}
    assert job["id"] == GenerationRequest("A camel resting on the snow field.", num_frames=40, seed=1, **TINY).video_id
    received = list(events(client, job["id"]))
    chunks = [data for name, data in received if name == "chunk"]
    assert [name for name, _ in received] == ["chunk"] * 4 + ["done"]
    assert [c["index"] for c in chunks] == [0, 1, 2, 3]
    assert [c["frames"] for c in chunks] == [[0, 16], [16, 24], [24, 32], [32, 40]]
    assert chunks[0]["status"] == "running"  # sent while the job was still running, not replayed at the end
    for c in chunks:
        assert frames_of(client, c["url"], tmp_path, f"chunk{c['index']}.mp4") == c["frames"][1] - c["frames"][0]
    assert frames_of(client, received[-1][1]["video_url"], tmp_path, "final.mp4") == 40

    status = client.get(job["status_url"]).json()
    assert (status["status"], status["chunks_done"], status["chunks_total"], status["error"]) == ("done", 4, 4, None)
    assert {"init_s", "extend_s", "total_s"} <= set(status["timings"])
    again = submit(client, num_frames=40, seed=1, **TINY)  # idempotent: the same job, no new work
    assert (again["id"], again["status"]) == (job["id"], "done")
    assert client.get(job["status_url"]).json()["attempts"] == 1


@pytest.mark.integration
def test_bounded_queue_accepts_at_most_max_queue_and_loses_none(client):
    blocker = submit(client, "A blocker.", **LONG)  # occupies the only generation replica
    assert next(events(client, blocker["id"]))[0] == "chunk"

    # Submit-and-cancel pairs never pile generation calls up behind the bound (they used to).
    for seed in range(200, 240):
        pair = submit(client, "Men walking in the rain.", seed=seed, **QUICK)
        assert client.delete(pair["status_url"]).status_code == 200
    load = client.get("/v1/service").json()
    assert load["active_jobs"] == 1 and load["dispatched_calls"] == 1, load  # the blocker alone

    def post(seed):
        return client.post("/v1/videos", json={"prompt": "Men walking in the rain.", "seed": seed, **QUICK})

    seeds = range(100, 120)
    with ThreadPoolExecutor(len(seeds)) as pool:
        responses = dict(zip(seeds, pool.map(post, seeds)))
    assert {r.status_code for r in responses.values()} <= {202, 429}
    accepted = [r.json()["id"] for r in responses.values() if r.status_code == 202]
    rejected = [seed for seed, r in responses.items() if r.status_code == 429]
    assert len(accepted) == MAX_QUEUE - 1 and len(rejected) == len(seeds) - len(accepted)  # the blocker holds one
    assert all(int(responses[seed].headers["Retry-After"]) > 0 for seed in rejected)

    assert client.delete(blocker["status_url"]).status_code == 202
    assert finish(client, blocker["id"])[0] == "cancelled"
    assert [finish(client, vid)[0] for vid in accepted] == ["done"] * len(accepted)
    retried = submit(client, "Men walking in the rain.", seed=rejected[0], **QUICK)  # room again
    assert finish(client, retried["id"])[0] == "done"


@pytest.mark.integration
def test_cancel_stops_a_running_job_and_frees_the_replica(client):
    job = submit(client, "A gorilla eats a banana in Central Park.", **LONG)
    stream = events(client, job["id"])
    assert next(stream)[0] == "chunk"
    response = client.delete(job["status_url"])
    assert response.status_code == 202 and response.json()["cancel_requested"]
    rest = [name for name, _ in stream]
    assert rest[-1] == "cancelled" and set(rest[:-1]) <= {"chunk"}
    status = client.get(job["status_url"]).json()
    assert (status["status"], status["error"], status["stage"]) == ("cancelled", CANCELLED, None)
    assert 1 <= status["chunks_done"] < status["chunks_total"] == len(ChunkPlan.for_extend(LONG["num_frames"]))
    assert client.delete(job["status_url"]).status_code == 200  # cancelling again changes nothing
    assert client.get(f"/v1/videos/{job['id']}.mp4").status_code == 409

    following = submit(client, "Ants, beetles and centipede nest.", **QUICK)
    assert finish(client, following["id"])[0] == "done"
    assert client.delete(following["status_url"]).status_code == 409  # done: nothing to cancel
    assert client.get(job["status_url"]).json()["chunks_done"] == status["chunks_done"]  # it stayed stopped


BAD_BODIES = [
    ({"prompt": "x", "num_frames": "many"}, 422, "num_frames"),
    ({"prompt": 5}, 422, "prompt"),
    ({"num_frames": 16}, 422, "prompt"),
    ({"prompt": ""}, 422, "prompt"),
    ({"prompt": "x", "num_frames": 100_000}, 422, "num_frames"),
    ({"prompt": "x", "num_frames": 8}, 422, "num_frames"),
    ({"prompt": "x", "seed": -1}, 422, "seed"),
    ({"prompt": "x", "refine": "yes"}, 422, "refine"),
    ({"prompt": "x", "blend": "fancy"}, 422, "blend"),
    ({"prompt": "x", "preset": "modelscope"}, 422, "preset"),
    ({"prompt": "x", "fps": 0}, 422, "fps"),
    ({"prompt": "x", "colour": "red"}, 422, "colour"),
    ("{not json", 422, None),
    ({"prompt": "x" * 20_000}, 413, None),
    # hostile values: each once gave a 500, and a lone surrogate also wedged the job board
    ('{"prompt": "a cat \\ud800"}', 422, "prompt"),
    ('{"prompt": "a cat\\u0000"}', 422, "prompt"),
    ('{"prompt": "x", "negative_prompt": "\\udfff"}', 422, "negative_prompt"),
    ('{"prompt": "x", "guidance_text": NaN}', 422, "guidance_text"),
    ('{"prompt": "x", "guidance_anchor": 1e400}', 422, "guidance_anchor"),
    ('{"prompt": "x", "unknown": Infinity}', 422, "unknown"),
    ('{"prompt": "x", "\\ud800": 1}', 422, None),
    ({"prompt": "x", "guidance_text": -1.0}, 422, "guidance_text"),
    ({"prompt": "x", "num_inference_steps": 1000}, 422, "num_inference_steps"),  # service caps
    ({"prompt": "x", "refine_steps": 101}, 422, "refine_steps"),
    ({"prompt": "x", "guidance_anchor": 1e308}, 422, "guidance_anchor"),
    ({"prompt": "a camel " * 40}, 422, "prompt"),
    ('{"prompt": "x", "deep": ' + "[" * 5000 + "]" * 5000 + "}", 422, "body"),  # nested past the parser's limit  # over 77 CLIP tokens: refused before it takes a queue slot
]


@pytest.mark.integration
def test_malformed_requests_get_the_right_4xx_and_the_service_keeps_serving(client):
    for body, code, name in BAD_BODIES:
        content = body if isinstance(body, str) else json.dumps(body)
        response = client.post("/v1/videos", content=content, headers={"content-type": "application/json"})
        assert response.status_code == code, (body, response.text)
        if name is not None:
            assert any(name in d["loc"] for d in response.json()["detail"]), response.text
    chunked = client.post("/v1/videos", content=iter([b'{"prompt": "', b"x" * 20_000, b'"}']),
                          headers={"content-type": "application/json"})  # no Content-Length: counted as it arrives
    assert "content-length" not in chunked.request.headers and chunked.status_code == 413
    capped = client.post("/v1/videos", json={"prompt": "x", "num_frames": 1201}).json()["detail"][0]
    assert capped["loc"] == ["body", "num_frames"] and "1200" in capped["allowed"]

    assert client.get("/v1/videos/not-an-id").status_code == 422
    assert client.get("/v1/videos/NOTHEX0123456789").status_code == 422
    for path in ("/v1/videos/0123456789abcdef", "/v1/videos/0123456789abcdef.mp4",
                 "/v1/videos/0123456789abcdef/stream", "/v1/videos/0123456789abcdef/chunks/0.mp4"):
        assert client.get(path).status_code == 404, path
    assert client.delete("/v1/videos/0123456789abcdef").status_code == 404

    schema = client.get("/openapi.json").json()
    assert {"/v1/videos", "/v1/videos/{video_id}", "/v1/videos/{video_id}/stream"} <= set(schema["paths"])
    assert schema["components"]["schemas"]["VideoBody"]["additionalProperties"] is False

    job = submit(client, "A squirrel on a table full of big nuts.", **QUICK)
    assert finish(client, job["id"])[0] == "done"


@pytest.mark.integration
def test_restart_answers_for_finished_jobs_and_fails_interrupted_ones(service, client, tmp_path):
    from ray import serve

    finished = GenerationRequest("A camel resting on the snow field.", num_frames=40, seed=1, **TINY).video_id
    running = submit(client, "A horse galloping on a beach.", **LONG)
    assert next(events(client, running["id"]))[0] == "chunk"
    serve.shutdown()
    service.deploy(api_token=TOKEN)  # the same root; the auth test below uses this deployment
    service.headers["Authorization"] = f"Bearer {TOKEN}"
    with service.client() as restarted:
        status = restarted.get(f"/v1/videos/{finished}").json()
        assert (status["status"], status["chunks_done"], status["chunks_total"]) == ("done", 4, 4)
        assert frames_of(restarted, status["video_url"], tmp_path, "final.mp4") == 40
        replay = list(events(restarted, finished))
        assert [data["frames"] for _, data in replay[:-1]] == [[0, 16], [16, 24], [24, 32], [32, 40]]
        assert replay[-1][0] == "done"

        interrupted = restarted.get(running["status_url"]).json()
        assert (interrupted["status"], interrupted["error"]) == ("failed", INTERRUPTED)
        again = restarted.post("/v1/videos", json={"prompt": "A horse galloping on a beach.", **LONG})
        assert again.status_code == 202 and again.json()["id"] == running["id"]  # queued again: resumes
        assert restarted.delete(running["status_url"]).status_code in (200, 202)
        assert finish(restarted, running["id"])[0] == "cancelled"


@pytest.mark.integration
def test_bearer_token(service):
    with httpx.Client(base_url=f"http://127.0.0.1:{service.port}", trust_env=False, timeout=60) as anonymous:
        body = {"prompt": "A cat on a sofa.", **QUICK}
        assert anonymous.post("/v1/videos", json=body).status_code == 401
        wrong = anonymous.post("/v1/videos", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        assert anonymous.get("/v1/videos/0123456789abcdef").status_code == 401
        assert anonymous.get("/openapi.json").status_code == 200  # the docs stay public
        ok = anonymous.post("/v1/videos", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 202


def test_serve_config_names_the_app_and_gives_generation_the_extend_pool():
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    from flows.serve_api import ServeArgs, _replica_options, app

    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO / "serve_config.yaml").read_text()))
    (application,) = config.applications
    assert application.import_path == "flows.serve_api:app"
    ServeArgs.model_validate(application.args)
    deployments = {d.name: d for d in application.deployments}
    assert set(deployments) == {"VideoAPI", "JobOwner", "Generator"}
    generator = deployments["Generator"]
    assert generator.max_ongoing_requests == 1
    assert generator.ray_actor_options.model_dump(exclude_unset=True) == _replica_options(GPU.extend)
    assert generator.autoscaling_config["max_replicas"] == GPU.extend.size
    assert deployments["JobOwner"].num_replicas == 1
    assert isinstance(app(application.args), serve.Application)  # the builder accepts the file's args


def test_job_board_ignores_a_superseded_attempt(tmp_path):
    """A cancelled run that reports late (after the job was submitted again) changes nothing and
    is told to stop; only the current attempt moves the job."""
    from models.chunk_plan import ChunkPlan

    board = JobBoard(str(tmp_path), max_queue=2)
    request = GenerationRequest("A camel resting on the snow field.", num_frames=24, **TINY)
    first = board.submit(request).attempt
    plan = ChunkPlan.for_extend(24)
    assert board.start(request.video_id, first, plan)
    assert board.cancel(request.video_id)["cancel_requested"]
    board.finish(request.video_id, first, "cancelled")
    second = board.submit(request).attempt
    assert second == first + 1 and board.view(request.video_id)["status"] == "queued"
    assert board.chunk_done(request.video_id, first, 0, {}) is True  # stale: stop
    board.finish(request.video_id, first, "done")
    assert board.view(request.video_id)["status"] == "queued" and board.view(request.video_id)["chunks_done"] == 0
    assert not board.start(request.video_id, first, plan) and board.start(request.video_id, second, plan)
    assert board.chunk_done(request.video_id, second, 0, {"init_s": 1.0}) is False
    assert board.submit(request).attempt is None  # running: the same job, no new work
    assert board.submit(GenerationRequest("Another.", num_frames=16, **TINY)).attempt == 1  # max_queue=2: full now
    with pytest.raises(QueueFull):
        board.submit(GenerationRequest("A third.", num_frames=16, **TINY))
    reread = JobBoard(str(tmp_path))  # a restart: the running job was interrupted
    assert (reread.view(request.video_id)["status"], reread.view(request.video_id)["error"]) == ("failed", INTERRUPTED)
    # its generator, still running, reports into the restarted board: ignored and told to stop
    assert reread.chunk_done(request.video_id, second, 1, {}) is True and reread.should_stop(request.video_id, second)
    assert reread.view(request.video_id)["chunks_done"] == 1 and reread.view(request.video_id)["status"] == "failed"


def test_the_body_defaults_are_the_request_defaults():
    """The body leaves the preset's parameters unset (null), so a body gives the request the CLI
    gives for the same fields."""
    from flows.serve_api import VideoBody
    from models.request import PAPER_SETTINGS, PARAM_DEFAULTS

    fields = {name: info.default for name, info in VideoBody.model_fields.items() if name != "prompt"}
    assert fields == {name: None if name in PAPER_SETTINGS else PARAM_DEFAULTS[name] for name in fields}
    assert GenerationRequest(**VideoBody(prompt="x").model_dump()) == GenerationRequest("x")


@pytest.mark.parametrize("args,environ,expected", [
    ({}, {"STREAMINGT2V_API_TOKEN": " s3cret \n"}, "s3cret"),
    ({"api_token": "mine"}, {}, "mine"),
    ({"auth": "none"}, {}, None),
    ({}, {}, "api_token"), ({}, {"STREAMINGT2V_API_TOKEN": ""}, "api_token"),
    ({"api_token": "   "}, {}, "api_token"), ({"auth": "none", "api_token": "x"}, {}, "auth"),
])
def test_the_service_requires_a_token_unless_auth_is_turned_off(args, environ, expected):
    """An empty or blank token never turns auth off (or locks everyone out): the service refuses
    to start and says how to configure it."""
    from flows.serve_api import ServeArgs
    from models.errors import ConfigError

    config = ServeArgs.model_validate(args)
    if expected in ("api_token", "auth"):
        with pytest.raises(ConfigError) as error:
            config.token(environ)
        assert error.value.field == expected and "auth=none" in str(error.value) or expected == "auth"
    else:
        assert config.token(environ) == expected


def test_an_error_never_echoes_what_json_cannot_carry():
    from flows.serve_http import ECHO_CHARS, json_safe

    assert json_safe("a cat \ud800") == "a cat \\ud800" and json_safe("a\x00b") == "a\\x00b"
    assert json_safe(float("nan")) == "nan" and json_safe(float("inf")) == "inf" and json_safe(1.5) == 1.5
    assert len(json_safe("x" * 10_000)) == ECHO_CHARS + 3
    assert json_safe({"\ud800": [float("-inf"), object()]}) == {"\\ud800": ["-inf", "<object>"]}
    json.dumps(json_safe({"a": ["\udfff", float("nan")]}), allow_nan=False).encode("utf-8")


def test_a_failed_manifest_write_changes_nothing(tmp_path, monkeypatch):
    """Write first, then change memory: when storage refuses a write the board stays as storage
    holds it (no pending row without a dispatch, no attempt raised, no queue slot taken), the
    caller learns StorageUnavailable (503 at the API), and once storage is back the same submit
    succeeds with the first attempt."""
    from infra.jobs import StorageUnavailable
    from infra.manifest import BatchManifest

    board = JobBoard(str(tmp_path), max_queue=1)
    request = GenerationRequest("A camel resting on the snow field.", num_frames=24, **TINY)
    write = BatchManifest.write

    def broken(self, uri):
        raise OSError("S3 says no")

    monkeypatch.setattr(BatchManifest, "write", broken)
    with pytest.raises(StorageUnavailable, match="nothing changed"):
        board.submit(request)
    assert not board.has(request.video_id)
    monkeypatch.setattr(BatchManifest, "write", write)
    submitted = board.submit(request)
    assert submitted.attempt == 1 and submitted.job["status"] == "queued"  # the slot was free
    monkeypatch.setattr(BatchManifest, "write", broken)
    with pytest.raises(StorageUnavailable):
        board.cancel(request.video_id)
    assert board.view(request.video_id)["status"] == "queued"
    monkeypatch.setattr(BatchManifest, "write", write)
    assert BatchManifest.read(board.uri).row(request.video_id)["status"] == "pending"
    assert board.cancel(request.video_id)["status"] == "cancelled"


def test_a_slow_manifest_write_does_not_block_the_job_owner(tmp_path, monkeypatch):
    """The owner writes in a worker thread: while a submit's write takes its time, views and
    watches are answered, and the watcher is woken once the change is committed."""
    import asyncio
    import time

    from flows.serve_jobs import JobOwner
    from infra.manifest import BatchManifest

    write = BatchManifest.write

    def slow(self, uri):
        time.sleep(0.5)
        write(self, uri)

    owner = JobOwner.func_or_class(str(tmp_path), 2)
    request = GenerationRequest("A camel resting on the snow field.", num_frames=24, **TINY)
    monkeypatch.setattr(BatchManifest, "write", slow)

    async def scenario():
        first = await owner.submit(request.params())
        vid, version = first["job"]["id"], first["job"]["version"]
        watcher = asyncio.create_task(owner.watch(vid, version, 5.0))
        cancelling = asyncio.create_task(owner.cancel(vid))  # a write of 0.5 s in a thread
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        viewed = await owner.view(vid)  # answered during the write
        answered_in = time.perf_counter() - t0
        woken = await watcher
        await cancelling
        return viewed, answered_in, woken

    viewed, answered_in, woken = asyncio.run(scenario())
    assert viewed["status"] == "queued" and answered_in < 0.2
    assert woken["status"] == "cancelled" and woken["version"] > viewed["version"]


class _Remote:
    def __init__(self, fn):
        self.fn = fn

    async def remote(self, *args):
        return self.fn(*args)


def test_streams_resume_after_last_event_id_and_are_capped(tmp_path):
    """The HTTP layer over a real job board: a reconnecting client (Last-Event-ID: k) gets only
    the chunks after k; beyond the open-stream caps the stream answers 429 while the status
    endpoint keeps answering; a DELETE that races the job's completion gets 409."""
    import asyncio
    from types import SimpleNamespace

    from flows.serve_api import ServeArgs, http_app
    from models.chunk_plan import ChunkPlan

    board = JobBoard(str(tmp_path), max_queue=2)
    request = GenerationRequest("A camel resting on the snow field.", num_frames=32, **TINY)
    vid, attempt = request.video_id, board.submit(request).attempt
    board.start(vid, attempt, ChunkPlan.for_extend(32))
    for index in range(3):
        board.chunk_done(vid, attempt, index, {})
    board.finish(vid, attempt, "done")
    racing = GenerationRequest("A horse galloping on a beach.", num_frames=16, **TINY)
    race_attempt = board.submit(racing).attempt
    board.start(racing.video_id, race_attempt, ChunkPlan.for_extend(16))

    def cancel_as_it_finishes(v):  # the generator reports done just before the owner takes the cancel
        board.finish(v, race_attempt, "done")
        return board.cancel(v)

    owner = SimpleNamespace(view=_Remote(lambda v: board.view(v) if board.has(v) else None),
                            watch=_Remote(lambda v, version, timeout: board.view(v)),
                            cancel=_Remote(cancel_as_it_finishes))
    api = SimpleNamespace(owner=owner, token=None, streams={}, streams_total=0,
                          args=ServeArgs(auth="none", max_streams=2, max_streams_per_job=1))
    app = http_app(api)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            resumed = await client.get(f"/v1/videos/{vid}/stream", headers={"Last-Event-ID": "0"})
            api.streams_total = 2  # the service's streams are all open
            capped = await client.get(f"/v1/videos/{vid}/stream")
            status = await client.get(f"/v1/videos/{vid}")
            api.streams_total = 0
            api.streams[vid] = 1  # this job's one stream is open
            per_job = await client.get(f"/v1/videos/{vid}/stream")
            cancelled = await client.delete(f"/v1/videos/{racing.video_id}")
            return resumed, capped, status, per_job, cancelled

    resumed, capped, status, per_job, cancelled = asyncio.run(scenario())
    events = [line.removeprefix("event: ") for line in resumed.text.splitlines() if line.startswith("event: ")]
    ids = [line.removeprefix("id: ") for line in resumed.text.splitlines() if line.startswith("id: ")]
    assert events == ["chunk", "chunk", "done"] and ids == ["1", "2"]
    assert capped.status_code == 429 and capped.headers["Retry-After"] and status.status_code == 200
    assert per_job.status_code == 429 and api.streams == {vid: 1}
    assert cancelled.status_code == 409


def test_hostile_bodies_get_a_4xx_naming_the_field_without_a_live_service():
    """The HTTP layer alone (no Serve): every malformed body of BAD_BODIES is answered 4xx before
    any job exists, with a JSON answer that names the field."""
    import asyncio
    from types import SimpleNamespace

    from flows.serve_api import ServeArgs, http_app
    from models.tokenizer import tiny_clip_tokenizer

    api = SimpleNamespace(owner=None, token=None, tokenizer=tiny_clip_tokenizer(), streams={}, streams_total=0,
                          args=ServeArgs(auth="none", max_queue=MAX_QUEUE))

    async def post_all():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=http_app(api)), base_url="http://t") as c:
            return [await c.post("/v1/videos", content=body if isinstance(body, str) else json.dumps(body),
                                 headers={"content-type": "application/json"}) for body, _, _ in BAD_BODIES]

    for (body, code, name), response in zip(BAD_BODIES, asyncio.run(post_all())):
        assert response.status_code == code, (body, response.text)
        if name is not None:
            assert any(name in d["loc"] for d in response.json()["detail"]), response.text

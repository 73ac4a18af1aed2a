"""The Ray Serve endpoint on a real local Serve instance (127.0.0.1, an explicit free port, tiny
preset): submit -> stream -> fetch, the bounded queue, cancellation, bad input, bearer-token
auth, and a restart that still answers for finished jobs."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from flows.page_screenshots import free_port, serve_locally
from infra.jobs import CANCELLED, LOST, JobBoard, QueueFull
from infra.video_io import read_video
from models.chunk_plan import ChunkPlan
from models.request import GenerationRequest

TINY = dict(refine=False, num_inference_steps=2)  # a 16-frame chunk in about a second on 2 cores
QUICK = dict(num_frames=16, refine=False, num_inference_steps=1)
LONG = dict(num_frames=1200, **TINY)  # 149 chunks (the service limit): minutes; every test cancels it
REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"
MAX_QUEUE = 5


@dataclass
class Service:
    port: int
    root: str
    headers: dict = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers=self.headers, trust_env=False,
                            timeout=120)

    def deploy(self, **args) -> None:
        serve_locally(self.root, self.port, **{"max_queue": MAX_QUEUE, "retry_after_s": 3, **args})


@pytest.fixture(scope="module")
def service(ray_local, tmp_path_factory):
    from ray import serve

    served = Service(free_port(), str(tmp_path_factory.mktemp("serve")))
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
def test_a_request_is_made_by_the_engines_pools_with_refine_pipeline_parallel(client, tmp_path, alive_actors):
    """No Serve replica holds a model: the cluster's engine makes the video on its init, extend and
    refine pools (Ray's state API), refinement over both refine actors."""
    import ray

    from stages.engine import find_engine

    job = submit(client, "A white circle moving up on a dotted background.", num_frames=24, num_inference_steps=1,
                 refine=True, refine_steps=2)
    name, data = finish(client, job["id"])
    assert name == "done", data
    assert read_video_bytes(client, job["video_url"], tmp_path).shape == (24, 128, 128, 3)
    status = client.get(job["status_url"]).json()
    assert {"init_s", "extend_s", "refine_s", "total_s"} <= set(status["timings"])
    engine = find_engine()
    described = ray.get(engine.describe.remote())
    assert described["refine_actors"] == 2 and described["videos"].get("done", 0) >= 1
    alive = alive_actors()
    assert {"Engine", "InitChunkWorker", "ExtendWorker"} <= set(alive) and alive.count("RefineWorker") == 2


@pytest.mark.integration
def test_a_batch_run_shares_the_engine_with_the_service(client, prefect_harness, tmp_path, alive_actors):
    """While a Serve request runs, a generate-batch run on the same cluster submits to the same
    engine (one Engine actor, one set of pools) and both videos are made."""
    from flows.generate_batch import generate_batch

    job = submit(client, "A tiger walking in a forest.", num_frames=64, **TINY)
    wait_for(client, job["id"], lambda j: j["chunks_done"] >= 1)
    summary = generate_batch(prompts=["A lighthouse in a storm."], output_uri=str(tmp_path / "batch"),
                             num_frames=24, num_inference_steps=1, refine=False)
    assert summary["counts"] == {"done": 1}
    alive = alive_actors()
    assert alive.count("Engine") == 1 and alive.count("InitChunkWorker") == 1 and alive.count("ExtendWorker") == 1
    assert finish(client, job["id"])[0] == "done"


def read_video_bytes(client: httpx.Client, url: str, tmp_path):
    response = client.get(url)
    assert response.status_code == 200
    path = tmp_path / "video.mp4"
    path.write_bytes(response.content)
    return read_video(str(path))


@pytest.mark.integration
def test_a_finished_job_is_purged_on_request_and_a_running_one_is_not(client, service):
    job = submit(client, "A purple kite over the sea.", **QUICK)
    assert finish(client, job["id"])[0] == "done"
    files = list(Path(service.root).glob(f"{job['id']}*"))
    assert files
    purged = client.delete(f"{job['status_url']}?purge=true")
    assert purged.status_code == 200 and purged.json() == {"id": job["id"], "status": "purged"}
    assert client.get(job["status_url"]).status_code == 404 and client.get(job["video_url"]).status_code == 404
    assert not any(f.exists() for f in files) and list(Path(service.root).glob("history/*.parquet"))
    running = submit(client, "A purple kite over the sea.", **{**QUICK, "num_frames": 400})
    assert client.delete(f"{running['status_url']}?purge=true").status_code == 409
    assert client.delete(running["status_url"]).status_code in (200, 202)
    assert finish(client, running["id"])[0] == "cancelled"


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
    ({"prompt": "a camel " * 40}, 422, "prompt"),  # over 77 CLIP tokens: refused before it takes a queue slot
    ('{"prompt": "x", "deep": ' + "[" * 5000 + "]" * 5000 + "}", 422, "body"),  # nested past the parser's limit
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
def test_restart_answers_for_finished_jobs_and_resumes_running_ones(service, client, tmp_path):
    """The whole application stops with a job running: the restarted one still answers for
    finished jobs, and the running job, whose generator died with it, is queued again once its
    lease expires and resumes after its last finished chunk."""
    from ray import serve

    finished = GenerationRequest("A camel resting on the snow field.", num_frames=40, seed=1, **TINY).video_id
    running = submit(client, "A horse galloping on a beach.", **LONG)
    assert next(events(client, running["id"]))[0] == "chunk"
    before = client.get(running["status_url"]).json()
    serve.shutdown()
    service.deploy(api_token=TOKEN, lease_s=2)  # the same root; the tests below use this deployment
    service.headers["Authorization"] = f"Bearer {TOKEN}"
    with service.client() as restarted:
        status = restarted.get(f"/v1/videos/{finished}").json()
        assert (status["status"], status["chunks_done"], status["chunks_total"]) == ("done", 4, 4)
        assert frames_of(restarted, status["video_url"], tmp_path, "final.mp4") == 40
        replay = list(events(restarted, finished))
        assert [data["frames"] for _, data in replay[:-1]] == [[0, 16], [16, 24], [24, 32], [32, 40]]
        assert replay[-1][0] == "done"

        resumed = wait_for(restarted, running["id"], lambda job: job["attempts"] > before["attempts"]
                           and job["status"] == "running" and job["chunks_done"] > before["chunks_done"])
        assert resumed["error"] is None
        again = restarted.post("/v1/videos", json={"prompt": "A horse galloping on a beach.", **LONG})
        assert again.status_code == 202 and again.json()["id"] == running["id"]  # the same job: no new work
        assert restarted.get(running["status_url"]).json()["attempts"] == resumed["attempts"]
        assert restarted.delete(running["status_url"]).status_code in (200, 202)
        assert finish(restarted, running["id"])[0] == "cancelled"


def wait_for(client: httpx.Client, video_id: str, condition, timeout_s: float = 120) -> dict:
    """Poll the job's status until ``condition(job)`` holds."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/videos/{video_id}").json()
        if condition(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def kill_replica(deployment: str) -> None:
    """Kill one replica of the app's ``deployment`` (Serve starts a new one)."""
    import ray

    (actor,) = [a for a in ray.util.list_named_actors(all_namespaces=True) if f"#{deployment}#" in a["name"]]
    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)


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


@pytest.mark.integration
@pytest.mark.parametrize("killed", ["Generator", "VideoAPI", "JobOwner"])
def test_a_killed_replica_loses_no_job(service, killed, tmp_path):
    """One replica dies while a job runs and another is queued (the generation worker mid-job,
    the ingress, the jobs' owner): both jobs end done with every frame, each row once in the
    manifest, and the service keeps answering."""
    from infra import storage

    with service.client() as c:
        first = submit(c, f"A red kite over a {killed} field.", num_frames=48, **TINY)
        second = submit(c, f"A blue boat on a {killed} lake.", num_frames=32, **TINY)
        wait_for(c, first["id"], lambda job: job["chunks_done"] >= 2)
        assert c.get(second["status_url"]).json()["status"] in ("queued", "running")  # the engine pipelines them
        kill_replica(killed)
    with service.client() as c:  # a new connection: the ingress may be new
        ended = [wait_for(c, job["id"], lambda j: j["status"] in ("done", "failed", "cancelled"), 180)
                 for job in (first, second)]
        assert [job["status"] for job in ended] == ["done", "done"], [(j["status"], j["error"]) for j in ended]
        assert frames_of(c, ended[0]["video_url"], tmp_path, "first.mp4") == 48
        assert frames_of(c, ended[1]["video_url"], tmp_path, "second.mp4") == 32
        assert c.get("/v1/service").json()["active_jobs"] == 0
    ids = storage.read_table(f"{service.root}/manifest.parquet").column("video_id").to_pylist()
    assert len(ids) == len(set(ids)) and {first["id"], second["id"]} <= set(ids)


@pytest.mark.integration
def test_a_store_that_refuses_manifest_writes_loses_no_job(service, s3_bucket, s3_faults, tmp_path):
    """The jobs' store (moto's S3 server) answers every manifest write 503 for a while: a
    submission gets 503 with Retry-After and changes nothing, reads keep answering, the running
    job cannot save its progress and is queued again once the store is back (its lease expired),
    and every job ends done with all its frames, each row once."""
    import time

    from ray import serve

    local_root = service.root
    serve.shutdown()
    service.root = f"{s3_bucket}/serve"
    service.deploy(api_token=TOKEN, lease_s=2)
    service.headers["Authorization"] = f"Bearer {TOKEN}"
    try:
        _outage(service, s3_faults, tmp_path)
    finally:  # the bucket goes with the test: the tests below use the local root again
        serve.shutdown()
        service.root = local_root
        service.deploy(api_token=TOKEN, lease_s=2)


def _outage(service: Service, s3_faults, tmp_path) -> None:
    import time

    from infra import storage

    with service.client() as c:
        first = submit(c, "A green tractor in a field.", num_frames=48, **TINY)
        wait_for(c, first["id"], lambda job: job["chunks_done"] >= 1)
        s3_faults.fail_puts("manifest.parquet", 600)
        refused = c.post("/v1/videos", json={"prompt": "A white swan on a pond.", "num_frames": 32, **TINY})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "3", refused.text
        assert c.get(first["status_url"]).status_code == 200 and c.get("/v1/service").status_code == 200
        time.sleep(3)  # the running job meets the outage too
        s3_faults.clear()
        second = submit(c, "A white swan on a pond.", num_frames=32, **TINY)
        ended = [wait_for(c, job["id"], lambda j: j["status"] in ("done", "failed", "cancelled"), 240)
                 for job in (first, second)]
        assert [job["status"] for job in ended] == ["done", "done"], [(j["status"], j["error"]) for j in ended]
        assert frames_of(c, ended[0]["video_url"], tmp_path, "first.mp4") == 48
        assert frames_of(c, ended[1]["video_url"], tmp_path, "second.mp4") == 32
    assert s3_faults.refused > 0
    ids = storage.read_table(f"{service.root}/manifest.parquet").column("video_id").to_pylist()
    assert len(ids) == len(set(ids)) == 2


@pytest.mark.integration
def test_300_open_streams_are_capped_and_the_service_keeps_answering(service):
    """300 clients open the event stream of one running job at once: the per-job cap admits 4,
    the others get 429 with Retry-After; status and submission keep answering meanwhile, and
    every admitted stream follows the job to its end."""
    import asyncio

    async def scenario():
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}", headers=service.headers,
                                     trust_env=False, timeout=240, limits=limits) as c:
            posted = await c.post("/v1/videos", json={"prompt": "An orange balloon over a town.", "num_frames": 64,
                                                      **TINY})
            assert posted.status_code == 202, posted.text
            job = posted.json()

            async def follow() -> tuple[int, str | None, str | None]:
                async with c.stream("GET", job["stream_url"]) as response:
                    if response.status_code != 200:
                        return response.status_code, response.headers.get("retry-after"), None
                    last = None
                    async for line in response.aiter_lines():
                        if line.startswith("event: "):
                            last = line.removeprefix("event: ")
                    return 200, None, last

            streams = [asyncio.create_task(follow()) for _ in range(300)]
            await asyncio.sleep(1.0)
            status = await c.get(job["status_url"])
            other = await c.post("/v1/videos", json={"prompt": "A grey cat asleep on a chair.", **QUICK})
            return await asyncio.gather(*streams), status.status_code, other.status_code

    results, status, other = asyncio.run(scenario())
    admitted = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(admitted) == 4 and len(refused) == 296 and {r[1] for r in refused} == {"3"}
    assert {r[2] for r in admitted} == {"done"}
    assert status == 200 and other == 202


def test_serve_config_names_the_app_and_leaves_the_gpus_to_the_engine():
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    from flows.serve_api import ServeArgs, app

    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO / "serve_config.yaml").read_text()))
    (application,) = config.applications
    assert application.import_path == "flows.serve_api:app"
    ServeArgs.model_validate(application.args)
    deployments = {d.name: d for d in application.deployments}
    assert set(deployments) == {"VideoAPI", "JobOwner", "Generator"}
    for deployment in deployments.values():  # the engine's pools hold the GPUs
        assert deployment.ray_actor_options.model_dump(exclude_unset=True) == {"num_cpus": 0}
    assert ServeArgs.model_validate(application.args).pools == "gpu"
    assert deployments["JobOwner"].num_replicas == 1
    assert isinstance(app(application.args), serve.Application)  # the builder accepts the file's args


def test_the_job_list_is_newest_first_and_carries_what_a_resubmission_sends(tmp_path):
    board = JobBoard(str(tmp_path), max_queue=4)
    requests = [GenerationRequest(f"prompt {i}", num_frames=16, seed=i, **TINY) for i in range(3)]
    for request in requests:
        board.submit(request)
    assert board.recent(2) == [requests[2].video_id, requests[1].video_id]
    view = board.view(requests[0].video_id)
    assert view["prompt"] == "prompt 0"
    assert GenerationRequest(**view["params"]).video_id == requests[0].video_id  # the same job again


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
    reread = JobBoard(str(tmp_path))  # a restart: the running job keeps its attempt and gets a fresh lease
    assert reread.view(request.video_id)["status"] == "running" and reread.leases.keys() == {request.video_id}
    assert reread.queued() == [(GenerationRequest("Another.", num_frames=16, **TINY).video_id, 1)]  # to dispatch
    # its generator, still running, reports into the restarted board and goes on
    assert reread.chunk_done(request.video_id, second, 1, {}) is False and not reread.should_stop(request.video_id, second)
    assert reread.view(request.video_id)["chunks_done"] == 2
    assert reread.chunk_done(request.video_id, first, 2, {}) is True  # the superseded one is still told to stop


def test_a_done_job_that_other_models_made_runs_again(tmp_path):
    """After a weights upgrade a resubmission does not return the old video: the job is queued
    again (its stored work is discarded when it runs); with the same models it is the same job."""
    board = JobBoard(str(tmp_path), max_queue=2)
    board.models = "models-1"
    request = GenerationRequest("A camel resting on the snow field.", num_frames=24, **TINY)
    vid, plan = request.video_id, ChunkPlan.for_extend(24)
    attempt = board.submit(request).attempt
    assert board.start(vid, attempt, plan)
    board.finish(vid, attempt, "done", artifacts={"models": "models-1"})
    assert board.submit(request).attempt is None  # the same models: the finished job answers
    upgraded = JobBoard(str(tmp_path), max_queue=2)  # restarted with new weights
    upgraded.models = "models-2"
    again = upgraded.submit(request)
    assert again.attempt == attempt + 1 and again.job["status"] == "queued"


def test_finished_jobs_are_purged_into_the_history_with_their_files(tmp_path):
    """Retention: a finished job's files go and its row moves to a history file, so the manifest
    holds only the jobs kept; an active job is never purged; a purged job submitted again is new."""
    import torch

    from infra import storage
    from infra.manifest import BatchManifest
    from infra.run_store import RunStore

    board = JobBoard(str(tmp_path), max_queue=3)
    done, active = (GenerationRequest(p, num_frames=24, **TINY) for p in ("A camel.", "A horse."))
    plan = ChunkPlan.for_extend(24)
    attempt = board.submit(done).attempt
    assert board.start(done.video_id, attempt, plan)
    store = RunStore(str(tmp_path), done.video_id)
    store.save_chunk(0, torch.zeros(1, 4, 2, 8, 8))
    storage.write_bytes(store.final_video, b"mp4")
    board.finish(done.video_id, attempt, "done", artifacts={"video_uri": store.final_video})
    board.submit(active)
    assert board.expired(3600) == [] and board.expired(0) == [done.video_id]
    assert board.purge([done.video_id, active.video_id]) == [done.video_id]
    assert not board.has(done.video_id) and board.has(active.video_id)
    assert not storage.exists(store.final_video) and store.finished_chunks() == []
    (history,) = (tmp_path / "history").glob("*.parquet")
    assert list(BatchManifest.read(str(history)).rows) == [done.video_id]
    reread = JobBoard(str(tmp_path), max_queue=3)
    assert list(reread.manifest.rows) == [active.video_id]
    assert reread.submit(done).attempt == 1  # a new job


def test_a_slow_store_does_not_stall_the_ingress_while_it_serves_a_file(tmp_path, monkeypatch):
    """The ingress's file responses ask storage in a worker thread: while a slow ``exists``
    answers, the event loop keeps running other requests' work."""
    import asyncio
    import time

    from fsspec.implementations.local import LocalFileSystem

    from flows.serve_http import file_response

    video = tmp_path / "v.mp4"
    video.write_bytes(b"x" * 10)
    exists = LocalFileSystem.exists

    def slow_exists(self, path, **kwargs):
        time.sleep(0.3)
        return exists(self, path, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "exists", slow_exists)

    async def scenario():
        ticks = 0

        async def other_work():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        worker = asyncio.create_task(other_work())
        response = await file_response(str(video))
        worker.cancel()
        return response, ticks

    response, ticks = asyncio.run(scenario())
    assert response.headers["content-length"] == "10" and ticks >= 5


class _Answer:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class _BoardOwner:
    """The owner as the relay sees it (``method.remote(...).result()``), over a real JobBoard."""

    def __init__(self, board: JobBoard):
        self.board = board
        for name in ("start", "chunk_done", "should_stop", "finish"):
            setattr(self, name, self._method(name))
        self.view = self._method("view")

    def _method(self, name):
        class Method:
            @staticmethod
            def remote(*args):
                return _Answer(getattr(self.board, name)(*args))

        return Method


class _ScriptedEngine:
    """The engine's answers to one relay: each watch returns the next snapshot of ``script``."""

    def __init__(self, video_id: str, script: list[dict]):
        self.video_id, self.script, self.calls = video_id, list(script), []

    def __call__(self, method, *args):
        self.calls.append((method, args))
        if method == "submit":
            return [self._snap(self.script.pop(0))]
        if method == "watch":
            return [self._snap(self.script.pop(0))] if self.script else []
        return None

    def _snap(self, fields):
        base = {"video_id": self.video_id, "version": len(self.calls), "chunks_done": 0, "error": None,
                "cancel_requested": False, "timings": {}}
        return {**base, **fields}


def _relay(tmp_path, script, before_watch=None):
    """Run the relay of a fresh job against a real JobBoard and a scripted engine."""
    from flows.serve_api import Generator

    board = JobBoard(str(tmp_path), 4)
    request = GenerationRequest("a red circle", num_frames=40, **TINY)
    attempt = board.submit(request).attempt
    engine = _ScriptedEngine(request.video_id, script)
    relay = object.__new__(Generator.func_or_class)
    relay.owner, relay.root, relay.poll_s, relay.client, relay.fingerprint = (
        _BoardOwner(board), str(tmp_path), 0.0, "serve:test", "models-1")

    def engine_call(method, *args):
        if method == "watch" and before_watch is not None:
            before_watch(board, request.video_id)
        return engine(method, *args)

    relay._engine = engine_call
    outcome = relay._run(request, attempt)
    return outcome, board.view(request.video_id), engine.calls


def test_the_relay_reports_the_engines_progress_to_the_owner(tmp_path):
    outcome, job, calls = _relay(tmp_path, [
        {"status": "queued"}, {"status": "running", "chunks_done": 1}, {"status": "running", "chunks_done": 3},
        {"status": "done", "chunks_done": 4, "timings": {"init_s": 1.0, "extend_s": 2.0, "total_s": 3.0}}])
    assert outcome == "done" and calls[0][0] == "submit" and calls[0][1][1] == "interactive"
    assert calls[0][1][0][0].previews  # the workers write each chunk's MP4 for the stream
    assert (job["status"], job["chunks_done"], job["chunks_total"]) == ("done", 4, 4)
    assert job["timings"] == {"init_s": 1.0, "extend_s": 2.0, "total_s": 3.0}
    assert not any(method == "cancel" for method, _ in calls)


def test_the_relay_passes_a_cancel_on_but_a_superseded_attempt_leaves_the_engines_work_alone(tmp_path):
    def cancel(board, vid):
        if board.view(vid)["status"] == "running":
            board.cancel(vid)

    outcome, job, calls = _relay(tmp_path / "cancel", [
        {"status": "running", "chunks_done": 1}, {"status": "running", "chunks_done": 2},
        {"status": "cancelled", "chunks_done": 2, "cancel_requested": True}], before_watch=cancel)
    assert outcome == "cancelled" and job["status"] == "cancelled"
    assert ("cancel", ([job["id"]], "serve:test")) in calls

    def supersede(board, vid):  # the lease expired: the job is queued again as a new attempt
        if board.view(vid)["attempts"] == 1:
            board.lost(vid, 1, "no report")

    outcome, job, calls = _relay(tmp_path / "supersede", [
        {"status": "running", "chunks_done": 1}, {"status": "running", "chunks_done": 2}], before_watch=supersede)
    assert outcome == "superseded" and job["attempts"] == 2
    assert not any(method == "cancel" for method, _ in calls)  # the next attempt attaches to the same work


def test_a_running_job_whose_generator_goes_silent_is_queued_again_then_fails(tmp_path, clock):
    """The lease: every report renews it; once it expires the job is queued again as a new
    attempt (the old one is told to stop), at most max_redispatch times, then it fails."""
    board = JobBoard(str(tmp_path), max_queue=2, lease_s=10, max_redispatch=1, clock=clock)
    request = GenerationRequest("A camel resting on the snow field.", num_frames=24, **TINY)
    vid, plan = request.video_id, ChunkPlan.for_extend(24)
    first = board.submit(request).attempt
    assert board.start(vid, first, plan)
    clock.now = 9
    assert board.should_stop(vid, first) is False  # a report: alive, the lease runs to 19
    clock.now = 18
    assert board.expire() == [] and board.view(vid)["status"] == "running"
    clock.now = 20
    ((again, second),) = board.expire()
    assert (again, second) == (vid, first + 1) and board.view(vid)["status"] == "queued"
    assert board.should_stop(vid, first)  # the silent attempt, if it ever wakes, stops
    assert board.queued() == [(vid, second)] and board.active() == 1
    assert board.start(vid, second, plan)
    clock.now = 40
    assert board.expire() == []  # lost a second time: past max_redispatch=1, it fails
    view = board.view(vid)
    assert view["status"] == "failed" and view["error"].startswith(LOST) and board.active() == 0
    assert board.submit(request).attempt == second + 1  # a resubmission starts counting again
    assert board.redispatched == {}


def test_a_failed_generation_call_queues_the_job_again_unless_it_had_ended(tmp_path):
    """A call that raises (the replica died) loses its job: queued again; a late failure of an
    attempt that already ended or was superseded changes nothing."""
    board = JobBoard(str(tmp_path), max_queue=2, max_redispatch=2)
    request = GenerationRequest("A camel resting on the snow field.", num_frames=24, **TINY)
    vid, plan = request.video_id, ChunkPlan.for_extend(24)
    first = board.submit(request).attempt
    assert board.start(vid, first, plan)
    second = board.lost(vid, first, "replica died")
    assert second == first + 1 and board.view(vid)["status"] == "queued"
    assert board.lost(vid, first, "late") is None and board.view(vid)["attempts"] == second
    assert board.lost(vid, second, "its call failed before it started") == second  # same attempt, not counted
    assert board.redispatched[vid] == 1 and board.view(vid)["status"] == "queued"
    assert board.start(vid, second, plan)
    board.finish(vid, second, "done")
    assert board.lost(vid, second, "answer lost after the end was saved") is None
    assert board.view(vid)["status"] == "done"
    cancelled = GenerationRequest("A horse.", num_frames=24, **TINY)
    attempt = board.submit(cancelled).attempt
    assert board.start(cancelled.video_id, attempt, plan) and board.cancel(cancelled.video_id)["cancel_requested"]
    assert board.lost(cancelled.video_id, attempt, "replica died") is None  # being cancelled: it is
    assert board.view(cancelled.video_id)["status"] == "cancelled"


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

    request = GenerationRequest("A camel resting on the snow field.", num_frames=24, **TINY)
    monkeypatch.setattr(BatchManifest, "write", slow)

    async def scenario():
        owner = JobOwner.func_or_class(str(tmp_path), 2, _Generator(lambda params, attempt: asyncio.sleep(60)))
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
        owner.sweeper.cancel()
        return viewed, answered_in, woken

    viewed, answered_in, woken = asyncio.run(scenario())
    assert viewed["status"] == "queued" and answered_in < 0.2
    assert woken["status"] == "cancelled" and woken["version"] > viewed["version"]


class _Remote:
    def __init__(self, fn):
        self.fn = fn

    async def remote(self, *args):
        return self.fn(*args)


class _Call:
    def __init__(self, fn):
        self.fn = fn

    async def remote(self, *args):
        return await self.fn(*args)


class _Generator:
    """A stand-in for the generation deployment's handle: ``run.remote(params, attempt)`` awaits
    ``work(params, attempt)``; its models' fingerprint is ``models``."""

    def __init__(self, work, models: str = "models-1"):
        async def fingerprint():
            return models

        self.run = _Call(work)
        self.models = _Call(fingerprint)


def test_the_owner_dispatches_again_a_job_whose_generation_call_failed(tmp_path):
    """The replica running a job dies (its call raises): the owner queues the job again and
    dispatches the new attempt, which finishes it; a restarted owner dispatches the jobs the
    manifest holds as queued. Calls in flight never exceed the queued jobs."""
    import asyncio

    from flows.serve_jobs import JobOwner

    request = GenerationRequest("A camel resting on the snow field.", num_frames=24, **TINY)
    plan = ChunkPlan.for_extend(24)
    calls = []

    async def scenario():
        owner = None

        async def work(params, attempt):
            calls.append(attempt)
            vid = GenerationRequest(**params, force=True).video_id
            assert await owner.start(vid, attempt, plan)
            if len(calls) == 1:
                raise RuntimeError("ActorDiedError: the replica died")
            await owner.finish(vid, attempt, "done")

        owner = JobOwner.func_or_class(str(tmp_path), 2, _Generator(work), lease_s=30)
        job = (await owner.submit(request.params()))["job"]
        for _ in range(500):  # 10 s at most; the call ends just after the job is saved done
            await asyncio.sleep(0.02)
            if (await owner.view(job["id"]))["status"] == "done" and not (await owner.load())["dispatched_calls"]:
                break
        owner.sweeper.cancel()
        return await owner.view(job["id"]), await owner.load()

    done, load = asyncio.run(scenario())
    assert calls == [1, 2] and (done["status"], done["attempts"]) == ("done", 2)
    assert load == {"active_jobs": 0, "dispatched_calls": 0}

    board = JobBoard(str(tmp_path))
    queued = GenerationRequest("A horse.", num_frames=24, **TINY)
    board.submit(queued)  # queued when the service stopped: nobody has its call any more
    calls.clear()

    async def restarted():
        async def work(params, attempt):
            calls.append(attempt)
            vid = GenerationRequest(**params, force=True).video_id
            assert await owner.start(vid, attempt, plan)
            await owner.finish(vid, attempt, "done")

        owner = JobOwner.func_or_class(str(tmp_path), 2, _Generator(work), lease_s=0.4)
        for _ in range(500):  # 10 s at most
            await asyncio.sleep(0.02)
            if (await owner.view(queued.video_id))["status"] == "done":
                break
        owner.sweeper.cancel()
        return await owner.view(queued.video_id)

    assert asyncio.run(restarted())["status"] == "done" and calls == [1]


def test_a_call_that_refuses_its_request_fails_the_job_once(tmp_path):
    """A generation call that raises a ConfigError (the request itself is refused) fails its job
    with that message; it is not dispatched again and again."""
    import asyncio

    from flows.serve_jobs import JobOwner
    from models.errors import ConfigError

    calls = []

    async def scenario():
        async def work(params, attempt):
            calls.append(attempt)
            raise ConfigError("init_video", "sha256:0.mp4", "an input staged under the root")

        owner = JobOwner.func_or_class(str(tmp_path), 2, _Generator(work), lease_s=30)
        job = (await owner.submit(GenerationRequest("A camel.", num_frames=24, **TINY).params()))["job"]
        for _ in range(100):
            await asyncio.sleep(0.02)
            if (await owner.view(job["id"]))["status"] == "failed":
                break
        await asyncio.sleep(1.5)  # longer than REDISPATCH_DELAY_S: a redispatch, were there one, has happened
        owner.sweeper.cancel()
        return await owner.view(job["id"])

    view = asyncio.run(scenario())
    assert view["status"] == "failed" and "init_video=" in view["error"] and calls == [1]


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


def test_concurrent_stream_requests_never_exceed_the_cap_and_release_their_slots(tmp_path):
    """Stream requests that arrive together each see the others' slots (a slot is taken before
    the handler yields to the event loop), so exactly the cap is admitted; every slot is given
    back when its stream ends."""
    import asyncio
    from types import SimpleNamespace

    from flows.serve_api import ServeArgs, http_app
    from models.chunk_plan import ChunkPlan

    board = JobBoard(str(tmp_path), max_queue=2)
    request = GenerationRequest("A camel resting on the snow field.", num_frames=24, **TINY)
    vid, attempt = request.video_id, board.submit(request).attempt
    board.start(vid, attempt, ChunkPlan.for_extend(24))
    board.chunk_done(vid, attempt, 0, {})

    class Watch:
        async def remote(self, v, version, timeout):
            await asyncio.sleep(0.3)  # the job runs a while, then ends
            board.finish(v, attempt, "done")
            return board.view(v)

    owner = SimpleNamespace(view=_Remote(lambda v: board.view(v) if board.has(v) else None), watch=Watch())
    api = SimpleNamespace(owner=owner, token=None, streams={}, streams_total=0,
                          args=ServeArgs(auth="none", max_streams=64, max_streams_per_job=4))
    app = http_app(api)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            return await asyncio.gather(*(client.get(f"/v1/videos/{vid}/stream") for _ in range(40)))

    responses = asyncio.run(scenario())
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 4 and codes.count(429) == 36
    assert all(r.text.rstrip().endswith("}") and "event: done" in r.text for r in responses if r.status_code == 200)
    assert api.streams == {} and api.streams_total == 0


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


def _clip_bytes(tmp_path, n: int = 12) -> bytes:
    from infra.video_io import write_mp4

    frames = np.full((n, 64, 64, 3), 128, np.uint8)
    for i in range(n):
        frames[i, 20:36, 4 + 3 * i:20 + 3 * i] = (220, 30, 30)
    write_mp4(frames, str(tmp_path / "clip.mp4"), 10)
    return (tmp_path / "clip.mp4").read_bytes()


def test_uploads_are_staged_by_content_and_paths_outside_the_prefixes_refused(tmp_path):
    """A clip or image uploaded to /v1/inputs comes back as a content reference (the same bytes,
    the same ref); a request that names a file the service was not told to read, an unreadable
    upload or one over the upload limit gets a 4xx naming init_video, and nothing is queued."""
    import asyncio
    from types import SimpleNamespace

    from flows.serve_api import ServeArgs, http_app
    from models.tokenizer import tiny_clip_tokenizer

    clip = _clip_bytes(tmp_path)
    api = SimpleNamespace(owner=None, token=None, tokenizer=tiny_clip_tokenizer(), streams={}, streams_total=0,
                          args=ServeArgs(auth="none", root=str(tmp_path / "root"), max_upload_bytes=len(clip) + 10))

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=http_app(api)), base_url="http://t") as c:
            first = await c.post("/v1/inputs/video", params={"extension": ".mp4"}, content=clip)
            again = await c.post("/v1/inputs/video", params={"extension": ".mp4"}, content=clip)
            broken = await c.post("/v1/inputs/video", params={"extension": ".mp4"}, content=b"\x00" * 64)
            wrong = await c.post("/v1/inputs/image", params={"extension": ".txt"}, content=b"hello")
            large = await c.post("/v1/inputs/video", params={"extension": ".mp4"}, content=clip + b"\x00" * 64)
            path = await c.post("/v1/videos", json={"prompt": "x", "init_video": str(tmp_path / "clip.mp4")})
            return first, again, broken, wrong, large, path

    first, again, broken, wrong, large, path = asyncio.run(scenario())
    assert first.status_code == 201 and first.json()["frames"] == 12 and first.json() == again.json()
    assert (tmp_path / "root" / "inputs" / first.json()["ref"].removeprefix("sha256:")).read_bytes() == clip
    for response, field in ((broken, "init_video"), (wrong, "init_image"), (path, "init_video")):
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", field], response.text
    assert "input_prefixes" in path.text
    assert large.status_code == 413
    assert sorted(p.name for p in (tmp_path / "root" / "inputs").iterdir()) == [first.json()["ref"][7:]]


@pytest.mark.integration
def test_a_video_starts_from_an_uploaded_clip(client, tmp_path):
    clip = _clip_bytes(tmp_path)
    ref = client.post("/v1/inputs/video", params={"extension": ".mp4"}, content=clip).json()["ref"]
    job = submit(client, prompt="a red circle moving right on a striped background", init_video=ref, num_frames=20,
                 **TINY)
    name, data = finish(client, job["id"])
    assert name == "done", data
    path = tmp_path / "final.mp4"
    path.write_bytes(client.get(job["video_url"]).content)
    frames = read_video(str(path))
    assert frames.shape[0] == 20 and frames[0, 28, 6:18, 0].min() > 150  # the clip's first frame, as given
    status = client.get(job["status_url"]).json()
    assert (status["chunks_done"], status["chunks_total"]) == (2, 2)  # the clip (12 frames), then 8 generated

"""The engine on a real local Ray cluster: one detached actor owns the pools and schedules every
video. Batch videos stream through the pools and faults stay contained, a killed worker's video
completes identically, an interactive video overtakes a waiting batch, a video submitted twice runs
once, cancellation stops it, and another set of models takes the engine over only when it is idle."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import ray

from infra import storage
from infra.cluster import LOCAL, ClusterConfig, PoolConfig
from infra.video_io import read_video
from models.errors import ConfigError
from models.request import GenerationRequest
from stages.engine import ENGINE_NAME, connect_engine, find_engine, follow_videos, stop_engine
from stages.sources import ModelSources
from stages.workers import VideoJob

FAST = dict(num_inference_steps=2, refine_steps=5)


def _jobs(out, prompts, **kwargs):
    return [VideoJob(GenerationRequest(p, seed=i, **{**FAST, **kwargs}).params(), str(out))
            for i, p in enumerate(prompts)]


def _ids(jobs):
    return [j.request.video_id for j in jobs]


@pytest.fixture(scope="module")
def engine(ray_local):
    stop_engine()
    yield connect_engine(ModelSources(), LOCAL)
    stop_engine()


@pytest.mark.integration
def test_a_batch_streams_through_the_pools_and_a_storage_error_fails_its_video_only(engine, tmp_path, alive_actors):
    prompts = ["A camel resting on the snow field.", "Men walking in the rain.", "A squirrel in Antarctica."]
    jobs = _jobs(tmp_path, prompts, num_frames=24)
    jobs[1].store.claim(ModelSources().fingerprint())  # its work folder, made by these models
    Path(jobs[1].store.work, "extend").write_text("a file where the video's chunk folder should be")
    seen: list[tuple[float, dict]] = []
    ray.get(engine.submit.remote(jobs, "batch", "test"))
    ids = _ids(jobs)
    last = follow_videos(engine, ids, 600, on_change=lambda snap: seen.append((time.monotonic(), snap)))
    assert last[ids[0]]["status"] == last[ids[2]]["status"] == "done"
    assert last[ids[1]]["status"] == "failed" and "Error" in last[ids[1]]["error"]
    for job in (jobs[0], jobs[2]):
        assert read_video(job.store.final_video).shape == (24, 128, 128, 3)
    assert last[ids[0]]["chunks_done"] == last[ids[0]]["chunks_total"] == 2
    assert set(last[ids[0]]["timings"]) == {"init_s", "extend_s", "refine_s", "total_s"}
    # Pipelining: the third video's init started before the first video's refine finished.
    start_init_3 = next(t for t, s in seen if s["video_id"] == ids[2] and s["stages"]["init"] == "running")
    end_refine_1 = next(t for t, s in seen if s["video_id"] == ids[0] and s["stages"]["refine"] == "done")
    assert start_init_3 < end_refine_1
    # Each stage ran on its own pool's actors: refine over both refine actors (pipeline-parallel).
    assert {"Engine", "InitChunkWorker", "ExtendWorker", "RefineWorker"} <= set(alive_actors())
    assert len(ray.get(engine.actors.remote("refine"))) == LOCAL.refine.size == 2


@pytest.mark.integration
def test_a_killed_extend_actor_is_restarted_and_the_video_completes_identically(engine, tmp_path):
    (reference,) = _jobs(tmp_path / "reference", ["A knight riding on a horse."], num_frames=48, refine=False)
    ray.get(engine.submit.remote([reference], "batch", "test"))
    assert follow_videos(engine, _ids([reference]), 600)[reference.request.video_id]["status"] == "done"

    (job,) = _jobs(tmp_path / "killed", ["A knight riding on a horse."], num_frames=48, refine=False)
    (extend_actor,) = ray.get(engine.actors.remote("extend"))
    killed = threading.Event()

    def kill_mid_video():  # once the actor has saved the init chunk and two extension chunks
        deadline = time.monotonic() + 120
        while len(job.store.finished_chunks()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        ray.kill(extend_actor, no_restart=False)
        killed.set()

    killer = threading.Thread(target=kill_mid_video)
    killer.start()
    ray.get(engine.submit.remote([job], "batch", "test"))
    result = follow_videos(engine, _ids([job]), 600)
    killer.join()
    assert killed.is_set() and result[job.request.video_id]["status"] == "done"
    assert job.store.load_low_res().tobytes() == reference.store.load_low_res().tobytes()
    assert storage.read_bytes(job.store.final_video) == storage.read_bytes(reference.store.final_video)


@pytest.mark.integration
def test_an_interactive_video_overtakes_waiting_batch_videos_and_runs_once(engine, tmp_path):
    batch = _jobs(tmp_path, [f"A red kite number {i}." for i in range(4)], num_frames=16, refine=False)
    (interactive,) = _jobs(tmp_path, ["A blue boat on a lake."], num_frames=16, refine=False)
    order: list[str] = []

    def note(snap):
        if snap["stages"].get("init") == "running" and snap["video_id"] not in order:
            order.append(snap["video_id"])

    ray.get(engine.submit.remote(batch, "batch", "batch-run"))
    ray.get(engine.submit.remote([interactive], "interactive", "serve"))
    again = ray.get(engine.submit.remote([interactive], "interactive", "serve-2"))[0]  # attaches, no second run
    assert again["status"] in ("queued", "running")
    last = follow_videos(engine, _ids(batch) + _ids([interactive]), 600, on_change=note)
    assert {s["status"] for s in last.values()} == {"done"}
    # The first batch video may have started before the request came; the request runs next.
    assert order.index(interactive.request.video_id) <= 1, order
    assert len(order) == 5  # each video started once


@pytest.mark.integration
def test_a_cancelled_video_stops_and_keeps_its_chunks_and_one_client_cannot_cancel_anothers(engine, tmp_path):
    (job,) = _jobs(tmp_path, ["A horse galloping on a beach."], num_frames=400, refine=False)
    vid = job.request.video_id
    ray.get(engine.submit.remote([job], "interactive", "a"))
    ray.get(engine.submit.remote([job], "batch", "b"))
    deadline = time.monotonic() + 120
    while ray.get(engine.watch.remote([vid], {}, 0))[0]["chunks_done"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    ray.get(engine.cancel.remote([vid], "a"))  # b still wants it
    assert not ray.get(engine.should_stop.remote(vid))
    ray.get(engine.cancel.remote([vid], "b"))
    last = follow_videos(engine, [vid], 120)[vid]
    assert last["status"] == "cancelled" and 2 <= last["chunks_done"] < last["chunks_total"]
    assert len(job.store.finished_chunks()) >= 2  # kept for a resume


@pytest.mark.integration
def test_other_models_take_the_engine_over_only_when_it_is_idle(engine, tmp_path):
    other = ClusterConfig(init=PoolConfig(num_cpus=0.25), extend=PoolConfig(num_cpus=0.25),
                          refine=PoolConfig(size=1, num_cpus=0.25))
    (job,) = _jobs(tmp_path, ["A cat on a sofa."], num_frames=200, refine=False)
    ray.get(engine.submit.remote([job], "batch", "test"))
    with pytest.raises(ConfigError, match="pools"):
        connect_engine(ModelSources(), other)  # busy: refused, naming what it runs
    ray.get(engine.cancel.remote(_ids([job]), "test"))
    follow_videos(engine, _ids([job]), 120)
    taken = connect_engine(ModelSources(), other)  # idle: stopped and started with the new pools
    assert ray.get(taken.describe.remote())["pools"]["init"]["num_cpus"] == 0.25
    assert find_engine() is not None and ray.get_actor(ENGINE_NAME, namespace="streamingt2v")
    stop_engine()
    assert find_engine() is None

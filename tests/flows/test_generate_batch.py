"""The Prefect flow generate-batch on a local Ray cluster, with the Prefect test harness:
manifest, videos, artifacts, re-runs, parameter validation, and an S3 output."""

from __future__ import annotations

import json
import os

import pytest

from infra.manifest import BatchManifest
from infra.video_io import read_video

pytestmark = pytest.mark.integration

PROMPTS = ["A camel resting on the snow field.", "Men walking in the rain.", "A squirrel on a table full of big nuts."]
FAST = dict(num_inference_steps=2, refine_steps=5)


def _artifacts(key):
    """Artifacts of ``key``, newest first (other flow tests of the session publish them too)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                               sort=ArtifactSort.CREATED_DESC)

    return asyncio.run(read())


def test_three_prompts_end_to_end_then_a_rerun_skips_them(prefect_harness, ray_local, tmp_path):
    from flows.generate_batch import generate_batch

    out = str(tmp_path / "batch")
    summary = generate_batch(prompts=PROMPTS, output_uri=out, num_frames=24, **FAST)
    assert summary["counts"] == {"done": 3} and summary["ran"] == 3
    manifest = BatchManifest.read(summary["manifest"])
    assert len(manifest) == 3
    for row in manifest.rows.values():
        assert (row["status"], row["init_status"], row["extend_status"], row["refine_status"]) == ("done",) * 4
        assert row["chunks_done"] == row["chunks_total"] == 2 and row["attempts"] == 1 and row["error"] is None
        assert row["init_s"] > 0 and row["extend_s"] > 0 and row["refine_s"] > 0 and row["total_s"] > 0
        assert read_video(row["video_uri"]).shape == (24, 128, 128, 3)
        assert read_video(row["low_res_uri"]).shape == (24, 64, 64, 3)
    assert [r["prompt"] for r in manifest.rows.values()] == PROMPTS
    table = _artifacts("generate-batch-videos")
    rows = table[0].data if not isinstance(table[0].data, str) else json.loads(table[0].data)
    assert len(rows) == 3 and {r["status"] for r in rows} == {"done"}
    progress = _artifacts("generate-batch-progress")
    assert progress and float(progress[0].data) == 100.0

    again = generate_batch(prompts=PROMPTS, output_uri=out, num_frames=24, **FAST)
    assert again["counts"] == {"done": 3} and again["ran"] == 0

    # A row is done only with its video: one that went missing is rebuilt (refined again from the
    # stored low-res frames) and the others are left alone.
    lost = next(iter(manifest.rows.values()))
    kept = {row["video_uri"]: os.stat(row["video_uri"]).st_mtime_ns for row in manifest.rows.values()
            if row is not lost}
    os.remove(lost["video_uri"])
    rebuilt = generate_batch(prompts=PROMPTS, output_uri=out, num_frames=24, **FAST)
    assert rebuilt["counts"] == {"done": 3} and rebuilt["ran"] == 1
    assert read_video(lost["video_uri"]).shape == (24, 128, 128, 3)
    assert {uri: os.stat(uri).st_mtime_ns for uri in kept} == kept


@pytest.mark.integration
def test_a_batch_row_starts_from_its_clip_and_changes_prompt(prefect_harness, ray_local, tmp_path):
    """A prompts file row with an init video and a prompt schedule (a JSON list): the clip is
    staged under the output URI, made into chunk 0 by the init pool, and starts the video as given."""
    import numpy as np

    from flows.generate_batch import generate_batch
    from infra.video_io import write_mp4

    frames = np.full((12, 64, 64, 3), 128, np.uint8)
    frames[:, 20:36, 20:36] = (220, 30, 30)
    write_mp4(frames, str(tmp_path / "clip.mp4"), 10)
    row = {"prompt": "a red circle moving right on a striped background", "init_video": str(tmp_path / "clip.mp4"),
           "prompt_schedule": [[20, "a blue square moving up on a dotted background"]]}
    (tmp_path / "prompts.jsonl").write_text(json.dumps(row) + "\n")
    out = str(tmp_path / "batch")
    summary = generate_batch(prompts=str(tmp_path / "prompts.jsonl"), output_uri=out, num_frames=28,
                             **{**FAST, "refine": False})
    assert summary["counts"] == {"done": 1}
    (video,) = BatchManifest.read(summary["manifest"]).rows.values()
    assert video["init_frames"] == 12 and video["init_video"].startswith("sha256:")
    assert video["prompt_schedule"] == "20:a blue square moving up on a dotted background"
    assert (tmp_path / "batch" / "inputs" / video["init_video"][7:]).is_file()
    assert video["chunks_done"] == video["chunks_total"] == 3
    made = read_video(video["video_uri"])
    assert made.shape == (28, 64, 64, 3) and made[0, 24:32, 24:32, 0].min() > 150  # the clip's first frame


def _task_runs(names):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=names)))

    return {run.name: run for run in asyncio.run(read())}


def test_each_videos_stages_are_prefect_task_runs_with_state_duration_and_retries(prefect_harness, ray_local,
                                                                                  tmp_path):
    from flows.generate_batch import generate_batch
    from infra.run_store import RunStore
    from models.request import GenerationRequest
    from stages.sources import ModelSources

    out = str(tmp_path / "batch")
    ok, broken = (GenerationRequest(p, num_frames=40, **FAST).video_id for p in PROMPTS[:2])
    store = RunStore(out, broken)
    store.claim(ModelSources().fingerprint())  # its work folder, made by these models
    os.makedirs(store.work, exist_ok=True)
    with open(os.path.join(store.work, "extend"), "w") as f:  # a file where its chunk folder should be
        f.write("not a folder")
    summary = generate_batch(prompts=PROMPTS[:2], output_uri=out, num_frames=40, **FAST)
    assert summary["counts"] == {"done": 1, "failed": 1}
    names = [f"{stage}/{vid}" for vid in (ok, broken) for stage in ("init-chunk", "extend", "refine")]
    runs = _task_runs(names)
    for stage in ("init-chunk", "extend", "refine"):
        run = runs[f"{stage}/{ok}"]
        assert run.state.is_completed() and run.run_count == 1 and run.total_run_time.total_seconds() > 0
    # in stage order (a stage's task run ends as the next one starts: their times may touch)
    assert runs[f"init-chunk/{ok}"].start_time < runs[f"extend/{ok}"].start_time < runs[f"refine/{ok}"].start_time
    assert runs[f"extend/{ok}"].end_time < runs[f"refine/{ok}"].end_time
    failed = runs[f"init-chunk/{broken}"]  # its first chunk cannot be saved
    assert failed.state.is_failed() and failed.run_count == 2  # the engine tried the stage again once
    assert "FileExistsError" in failed.state.message
    assert f"extend/{broken}" not in runs and f"refine/{broken}" not in runs  # stages that never ran
    row = BatchManifest.read(summary["manifest"]).row(broken)
    assert row["status"] == "failed" and row["init_status"] == "failed" and "FileExistsError" in row["error"]


def test_the_progress_artifact_moves_per_chunk(monkeypatch):
    import flows.generate_batch as batch

    values = []
    monkeypatch.setattr(batch, "create_progress_artifact", lambda **kwargs: "progress-id")
    monkeypatch.setattr(batch, "update_progress_artifact", lambda artifact, value, **kwargs: values.append(value))
    monkeypatch.setattr(batch, "save_manifest", lambda manifest, uri: True)
    monkeypatch.setattr(batch.BatchFollower, "PROGRESS_EVERY_S", 0.0)
    from infra.manifest import BatchManifest
    from models.request import GenerationRequest

    requests = [GenerationRequest(p, num_frames=40) for p in PROMPTS[:2]]
    follower = batch.BatchFollower(BatchManifest.create("b", requests), "m.parquet", "out", 0, 2, "models", None)
    versions, open_ = {}, {r.video_id for r in requests}

    def snap(request, status, chunks, version):
        return {"video_id": request.video_id, "version": version, "status": status, "chunks_done": chunks,
                "chunks_total": 4, "stages": {"init": "done", "extend": "running", "refine": "pending"},
                "timings": {}, "error": None, "retried": {}, "started_at": 1.0}

    for version, chunks in enumerate((1, 2, 3)):
        follower.apply([snap(requests[0], "running", chunks, version)], versions, open_)
    follower.apply([snap(requests[0], "done", 4, 3)], versions, open_)
    assert values == [12.5, 25.0, 37.5, 50.0]


@pytest.mark.parametrize("params,field", [
    (dict(num_frames=8), "num_frames"),
    (dict(blend="soft"), "blend"),
    (dict(fps=0), "fps"),
    (dict(prompts=["ok", "  "]), "prompts[1].prompt"),
    (dict(pools="no-such-profile"), "pools"),
])
def test_invalid_parameters_are_rejected_before_any_work(prefect_harness, tmp_path, params, field):
    from flows.generate_batch import generate_batch

    out = tmp_path / "batch"
    with pytest.raises(Exception) as info:
        generate_batch(**{"prompts": PROMPTS, "output_uri": str(out), **params})
    assert field in str(info.value)
    assert not out.exists()


def test_batch_on_s3(prefect_harness, ray_local, s3_bucket):
    from flows.generate_batch import generate_batch

    out = f"{s3_bucket}/nightly"
    summary = generate_batch(prompts=[{"prompt": "Ants, beetles and centipede nest.", "seed": 9}], output_uri=out,
                             num_frames=16, refine=False, **FAST)
    assert summary["counts"] == {"done": 1}
    (row,) = BatchManifest.read(f"{out}/manifest.parquet").rows.values()
    assert row["video_uri"].startswith("s3://") and row["refine_status"] == "skipped"
    assert read_video(row["video_uri"]).shape == (16, 64, 64, 3)


def test_a_failed_manifest_save_retries_and_never_ends_the_batch(tmp_path, monkeypatch):
    """Each scheduler event's save is retried; one that still fails is logged and left to the
    next event's whole-file write, instead of ending the batch."""
    from flows.generate_batch import save_manifest
    from infra.manifest import BatchManifest
    from models.request import GenerationRequest

    manifest = BatchManifest.create("b", [GenerationRequest("a camel")])
    uri = str(tmp_path / "manifest.parquet")
    calls = []
    write = BatchManifest.write

    def flaky(self, target):
        calls.append(target)
        if len(calls) < 3:
            raise OSError("SlowDown")
        write(self, target)

    monkeypatch.setattr(BatchManifest, "write", flaky)
    assert save_manifest(manifest, uri, delay_s=0.0) and len(calls) == 3
    assert len(BatchManifest.read(uri)) == 1
    monkeypatch.setattr(BatchManifest, "write", lambda self, target: (_ for _ in ()).throw(OSError("down")))
    assert save_manifest(manifest, uri, tries=2, delay_s=0.0) is False  # no exception: the batch goes on


def test_a_batch_on_an_output_uri_another_run_holds_is_refused_before_any_work(prefect_harness, tmp_path):
    """Two batches on one output_uri at once: the second stops with an error naming the holder
    and writes nothing; once the first releases the location, it runs."""
    from flows.generate_batch import generate_batch
    from infra.output_lease import OutputBusy, OutputLease

    out = tmp_path / "batch"
    with OutputLease(str(out), holder="the-first-batch"):
        with pytest.raises(OutputBusy, match=r"output_uri=.*the-first-batch holds its lease until"):
            generate_batch(prompts=PROMPTS, output_uri=str(out), num_frames=24, **FAST)
    assert not (out / "manifest.parquet").exists()


def test_a_sigkilled_batch_driver_then_a_rerun_loses_and_duplicates_nothing(prefect_harness, ray_local, tmp_path):
    """The driver of a batch is SIGKILLed mid-video: a rerun at once is refused (the dead run's
    lease still holds), a rerun once it has expired takes the location over and finishes every
    video, each row once, resuming from the chunks the dead run left."""
    import json
    import signal
    import subprocess
    import sys
    import textwrap
    import time
    from pathlib import Path

    from prefect.settings import PREFECT_API_URL

    from flows.generate_batch import generate_batch
    from infra.output_lease import LEASE_NAME, OutputBusy

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "batch"
    params = dict(num_frames=40, refine=False, num_inference_steps=2)
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        import sys
        from flows.generate_batch import generate_batch
        generate_batch(prompts={PROMPTS[:2]!r}, output_uri=sys.argv[1], ray_address="auto", **{params!r})
    """))
    import ray

    env = {**os.environ, "PYTHONPATH": str(repo), "PREFECT_API_URL": PREFECT_API_URL.value(),
           "STREAMINGT2V_LEASE_TTL_S": "6",  # 'auto' is this test's cluster, not the newest on the machine
           "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen([sys.executable, str(driver), str(out)], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(out.glob(".work/*/extend/*.safetensors"))) < 2:
        assert proc.poll() is None, "the batch finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    from infra.chunk_table import read_chunk_table

    recorded = [Path(uri) for uri in read_chunk_table(str(out)).column("latent_uri").to_pylist()]
    left = {p: p.stat().st_mtime_ns for p in recorded}  # the chunks a rerun may trust
    assert left

    with pytest.raises(OutputBusy):  # the dead driver's lease has not expired yet
        generate_batch(prompts=PROMPTS[:2], output_uri=str(out), **params)
    expires_at = json.loads((out / LEASE_NAME).read_text())["expires_at"]
    time.sleep(max(0.0, expires_at - time.time()) + 0.2)
    summary = generate_batch(prompts=PROMPTS[:2], output_uri=str(out), **params)
    assert summary["counts"] == {"done": 2}
    manifest = BatchManifest.read(summary["manifest"])
    ids = [row["video_id"] for row in manifest.rows.values()]
    assert len(manifest) == 2 and len(set(ids)) == 2
    for row in manifest.rows.values():
        assert row["status"] == "done" and read_video(row["video_uri"]).shape == (40, 64, 64, 3)
        assert row["models"] is not None
    assert len(list(out.glob(".work/*/extend/*.safetensors"))) == 8  # 4 chunks each
    assert {p: p.stat().st_mtime_ns for p in left} == left  # the dead run's chunks were resumed, not redone

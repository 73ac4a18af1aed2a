"""The Prefect flow nightly-benchmark on a local Ray cluster with the Prefect test harness: two
nights of the smoke set (manifest metric columns, history rows, plots, the markdown comparison),
parameter validation before any work, and the scheduled deployment."""

from __future__ import annotations

import os

import cv2
import pytest

from evaluation import history
from evaluation.prompt_sets import PAPER_TEST_PROMPTS, SMOKE_PROMPTS
from infra.manifest import METRIC_COLUMNS, BatchManifest

FAST = dict(num_frames=24, num_inference_steps=2, refine=True, refine_steps=5, flow_size=64)
FLOW_METRIC_COLUMNS = ("scuts", "ofs", "warp_error", "mawe", "flow_std")  # computable without model files


def _latest_markdown() -> str:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from flows.nightly_benchmark import MARKDOWN_KEY

    async def read():
        async with get_client() as client:
            key = ArtifactFilter(key=ArtifactFilterKey(any_=[MARKDOWN_KEY]))
            return await client.read_artifacts(artifact_filter=key, sort=ArtifactSort.CREATED_DESC, limit=1)

    return asyncio.run(read())[0].data


@pytest.mark.integration
def test_two_nights_fill_the_manifest_append_the_history_and_compare(prefect_harness, ray_local, tmp_path):
    from flows.nightly_benchmark import nightly_benchmark

    out, history_uri = str(tmp_path / "nightly"), str(tmp_path / "history" / "history.parquet")
    params = dict(prompt_set="smoke", output_uri=out, history_uri=history_uri, apm=False,
                  metric_models={"clip": str(tmp_path / "no-clip-here")}, **FAST)
    first = nightly_benchmark(**params)
    assert (first["videos"], first["failed"], first["previous_run_id"]) == (2, 0, None)
    manifest = BatchManifest.read(first["manifest"])
    assert first["manifest"].startswith(f"{out}/{first['run_id']}/") and len(manifest) == 2
    for row in manifest.rows.values():
        assert row["status"] == "done" and row["apm"] is False
        assert all(row[name] is not None for name in FLOW_METRIC_COLUMNS)
        assert all(row[name] is None for name in set(METRIC_COLUMNS) - set(FLOW_METRIC_COLUMNS))
    table = history.read_history(history_uri)
    assert table.column("kind").to_pylist() == ["video", "video", "summary"]
    assert table.column("prompt").to_pylist()[:2] == list(SMOKE_PROMPTS)
    summary = history.summaries(table)[0]
    assert summary["videos"] == 2 and summary["prompt_set"] == "smoke" and summary["flow_size"] == 64
    mawes = [row["mawe"] for row in manifest.rows.values()]
    assert summary["mawe"] == pytest.approx(sum(mawes) / 2) == first["means"]["mawe"]
    assert summary["extend_s"] > 0 and summary["clip_score"] is None
    assert {"metric_trends", "worst_xt_slices", "worst_strip", "best_strip"} == set(first["plots"])
    for uri in first["plots"].values():
        assert uri.startswith(str(tmp_path / "history" / "plots" / first["run_id"])) and cv2.imread(uri) is not None
    markdown = _latest_markdown()
    assert "No previous run with the same settings" in markdown
    assert "0.03 (CAM w/o APM" in markdown  # apm=False: the paper's SCuts applies
    assert "3.32 (randomized blending, App. D.3)" in markdown
    assert "clip_score: weights not found" in markdown and "not comparable" in markdown

    second = nightly_benchmark(**params)
    assert second["run_id"] != first["run_id"] and second["previous_run_id"] == first["run_id"]
    table = history.read_history(history_uri)
    assert table.column("kind").to_pylist().count("video") == 4 and len(history.summaries(table)) == 2
    markdown = _latest_markdown()
    assert f"Previous run with the same settings: `{first['run_id']}`" in markdown
    assert second["run_id"] in markdown

    # A run a crash left without its summary is listed, and continuing a run keeps its finished
    # videos (not regenerated) and replaces its history rows instead of adding a third night.
    from flows.nightly_benchmark import unfinished_runs

    (tmp_path / "nightly" / "crashed").mkdir()
    manifest.write(str(tmp_path / "nightly" / "crashed" / "manifest.parquet"))
    assert unfinished_runs(out, history_uri) == ["crashed"]
    videos = {row["video_uri"]: os.stat(row["video_uri"]).st_mtime_ns for row in manifest.rows.values()}
    again = nightly_benchmark(**params, run_id=first["run_id"])
    assert again["run_id"] == first["run_id"] and again["means"]["mawe"] == first["means"]["mawe"]
    assert {uri: os.stat(uri).st_mtime_ns for uri in videos} == videos
    table = history.read_history(history_uri)
    assert table.column("kind").to_pylist().count("video") == 4 and len(history.summaries(table)) == 2


@pytest.mark.integration
@pytest.mark.parametrize("params,field", [
    (dict(cam_variant="concat-baseline"), "cam_variant"),
    (dict(cam_variant="conc-cond", apm=False), "streaming_model"),
    (dict(blend="soft"), "blend"),
    (dict(num_frames=8), "num_frames"),
    (dict(flow_size=4), "flow_size"),
    (dict(prompt_set=["A camel.", "  "]), "prompt_set[1].prompt"),
    (dict(run_id="../elsewhere"), "run_id"),
])
def test_invalid_parameters_are_rejected_before_any_work(prefect_harness, tmp_path, params, field):
    from flows.nightly_benchmark import nightly_benchmark

    out, history_uri = tmp_path / "nightly", tmp_path / "history.parquet"
    with pytest.raises(Exception) as info:
        nightly_benchmark(**{"prompt_set": "smoke", "output_uri": str(out), "history_uri": str(history_uri), **params})
    assert field in str(info.value)
    assert not out.exists() and not history_uri.exists()



def test_cam_variant_must_match_the_streaming_model(tiny_cam_dir, tiny_conc_cond_dir):
    from flows.nightly_benchmark import check_cam_variant
    from models.errors import ConfigError
    from models.streaming_t2v import conditioning_of

    dirs = {"cam": tiny_cam_dir, "conc": tiny_conc_cond_dir}
    assert (conditioning_of(dirs["cam"]), conditioning_of(dirs["conc"])) == ("cam", "conc-cond")
    check_cam_variant("conc-cond", dirs["conc"], apm=False)
    check_cam_variant("cam", dirs["cam"], apm=True)
    for variant, path, apm, field in [("conc-cond", "conc", True, "apm"), ("cam", "conc", False, "streaming_model"),
                                      ("conc-cond", "cam", False, "streaming_model")]:
        with pytest.raises(ConfigError) as err:
            check_cam_variant(variant, dirs[path], apm)
        assert err.value.field == field


def test_named_prompt_sets_and_paper_figures():
    from flows.nightly_benchmark import MANIFEST_COLUMNS, paper_figure, prompt_rows

    assert prompt_rows("toyworld")[1][0] == {"prompt": "a red circle moving left on a striped background"}
    assert len(PAPER_TEST_PROMPTS) == 10 and PAPER_TEST_PROMPTS[0] == "A camel resting on the snow field."
    assert prompt_rows("paper") == ("paper", [{"prompt": p} for p in PAPER_TEST_PROMPTS])
    label, rows = prompt_rows(["b", "a"])
    assert label.startswith("list:") and label != prompt_rows(["a", "b"])[0] and len(rows) == 2
    assert sorted(MANIFEST_COLUMNS.values()) == sorted(METRIC_COLUMNS)
    settings = dict(refine=True, blend="shared-noise", apm=True, num_frames=240)
    assert paper_figure("flow_magnitude_std", settings) == (6.01, "shared noise, App. D.3")
    assert paper_figure("flow_magnitude_std", {**settings, "refine": False}) is None
    assert paper_figure("scuts", settings) is None  # 0.03 is CAM without APM
    assert paper_figure("reid_score", settings)[0] == 94.95


def test_nightly_deployment_runs_at_two_utc_next_to_the_others(monkeypatch):
    from flows.serve import NIGHTLY_PARAMETERS_ENV, deployments

    monkeypatch.setenv(NIGHTLY_PARAMETERS_ENV, '{"base_model": "/models/base", "history_uri": "s3://b/h.parquet"}')
    by_name = {f"{d.flow_name}/{d.name}": d for d in deployments()}
    assert set(by_name) == {"generate-batch/local", "generate-batch/gpu-cluster", "train-streamingt2v/local",
                            "train-streamingt2v/gpu-cluster", "nightly-benchmark/nightly",
                            "bench/nightly-gpu", "bench/local"}
    nightly = by_name["nightly-benchmark/nightly"]
    assert nightly.flow_name == "nightly-benchmark"
    (schedule,) = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC")
    assert nightly.parameters["prompt_set"] == "paper" and nightly.parameters["num_frames"] == 240
    assert nightly.parameters["base_model"] == "/models/base" and nightly.parameters["history_uri"] == "s3://b/h.parquet"

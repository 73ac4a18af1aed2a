"""The toy-world ablation table: five real nightly-benchmark runs (tiny random models, 24
frames, few steps), one row each, and bad settings refused before any work."""

from __future__ import annotations

import pytest

from models.errors import ConfigError
from studies.toyworld_ablations import METRICS, TRACKING, AblationConfig, _parser, main, markdown, resumed_run, run, tracking_means


@pytest.mark.integration
def test_each_ablation_is_a_finished_nightly_run_with_its_metrics(prefect_harness, ray_local, tmp_path,
                                                                    tiny_cam_dir, tiny_conc_cond_dir):
    config = AblationConfig(tiny_cam_dir, tiny_conc_cond_dir, num_prompts=1, num_frames=24, steps=2,
                            refine_steps=5, flow_size=32, output_uri=str(tmp_path / "ablations"))
    rows = run(config)
    assert [r["label"] for r in rows] == [a.label for a in config.ablations()]
    assert all(r["videos"] == 1 and r["failed"] == 0 for r in rows)
    assert all(isinstance(r[m], float) for r in rows for m in METRICS)
    assert all(r[m] is None or isinstance(r[m], float) for r in rows for m in TRACKING)
    assert len({r["run_id"] for r in rows}) == 5
    table = markdown(rows, config)
    assert table.count("\n| ") == 5 and "1 held-out toy prompts, 24 frames" in table  # one line per row


def test_bad_settings_are_refused_naming_the_field(capsys, tmp_path):
    with pytest.raises(ConfigError) as err:
        AblationConfig("cam", "conc", num_prompts=0)
    assert err.value.field == "num_prompts"
    assert main(["--cam-model", "a", "--conc-cond-model", "b", "--num-prompts", "99", "--out", str(tmp_path)]) == 2
    assert "num_prompts" in capsys.readouterr().err and not any(tmp_path.iterdir())
    assert main(["--cam-model", "a", "--conc-cond-model", "b", "--pools", "h100", "--out", str(tmp_path)]) == 2
    assert "pools" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_one_comparison_runs_its_rows_only():
    blending = AblationConfig(comparisons=("blending",))
    assert [a.key for a in blending.ablations()] == ["randomized", "independent"]
    shipped = AblationConfig(comparisons=("shipped",))
    assert [(a.key, a.params["refine"]) for a in shipped.ablations()] == [("shipped", False)]
    assert "apm" not in shipped.ablations()[0].params  # the shipped model as users run it: APM on
    every = AblationConfig("cam", "conc")
    assert [a.key for a in every.ablations()] == ["cam", "conc-cond", "randomized", "independent", "shipped"]
    with pytest.raises(ConfigError) as err:
        AblationConfig(conc_cond_model="conc")  # the conditioning rows need both models
    assert err.value.field == "cam_model"
    with pytest.raises(ConfigError) as err:
        AblationConfig("cam", "conc", comparisons=("speed",))
    assert err.value.field == "comparisons"


def test_one_row_runs_alone_and_needs_only_its_own_model(capsys, tmp_path):
    """CAM's row can run while Conc-Cond is still training: it needs no Conc-Cond model."""
    cam_only = AblationConfig("cam", None, comparisons=("conditioning",), rows=("cam",))
    assert [(a.key, a.params["streaming_model"]) for a in cam_only.ablations()] == [("cam", "cam")]
    assert [a.key for a in AblationConfig("cam", "conc", rows=("shipped", "cam")).ablations()] == ["cam", "shipped"]
    with pytest.raises(ConfigError) as err:
        AblationConfig("cam", None, rows=("conc-cond",))
    assert err.value.field == "conc_cond_model" and "conc-cond row" in str(err.value)
    with pytest.raises(ConfigError) as err:  # a row outside the chosen comparison
        AblationConfig("cam", "conc", comparisons=("blending",), rows=("cam",))
    assert err.value.field == "rows" and "randomized" in str(err.value)
    args = _parser().parse_args(["--only", "conditioning", "--rows", "cam"])
    assert args.rows == ["cam"]
    assert main(["--cam-model", "a", "--only", "shipped", "--rows", "cam", "--out", str(tmp_path)]) == 2
    assert "rows" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_resume_continues_a_rows_one_unfinished_run(tmp_path):
    """A row killed mid-run (a manifest, no summary in the history) is continued, not restarted."""
    from infra.manifest import BatchManifest

    config = AblationConfig("cam", "conc", output_uri=str(tmp_path), rows=("cam",), resume=True)
    assert resumed_run(config, "cam") is None  # nothing to continue: a new run
    BatchManifest("killed").write(str(tmp_path / "cam" / "killed" / "manifest.parquet"))
    assert resumed_run(config, "cam") == "killed" and resumed_run(config, "conc-cond") is None
    BatchManifest("other").write(str(tmp_path / "cam" / "other" / "manifest.parquet"))
    with pytest.raises(ConfigError) as err:
        resumed_run(config, "cam")
    assert err.value.field == "resume" and "killed" in str(err.value) and "other" in str(err.value)
    assert _parser().parse_args(["--resume"]).resume


def test_tracking_columns_follow_the_captioned_object_of_each_finished_video(tmp_path):
    """A run's manifest with a rendered clip (the truth moves 0.2 widths/s) and a failed video."""
    from infra.manifest import BatchManifest
    from infra.video_io import write_mp4
    from models.request import GenerationRequest
    from toyworld.scenes import Scene, render

    scene = Scene("square", "blue", "right", "striped", speed=0.2)
    requests = [GenerationRequest(scene.caption, num_frames=48), GenerationRequest(scene.caption, num_frames=48, seed=1)]
    manifest = BatchManifest.create("b", requests)
    done, failed = list(manifest.rows)
    write_mp4(render(scene, 48, 10.0, 64), str(tmp_path / "v.mp4"), fps=10)
    manifest.update(done, status="done", low_res_uri=str(tmp_path / "v.mp4"))
    manifest.update(failed, status="failed")
    manifest.write(str(tmp_path / "manifest.parquet"))
    means = tracking_means(str(tmp_path / "manifest.parquet"))
    assert means["presence"] == 1.0 and abs(means["speed_along"] - 0.2) < 0.02 and means["along_fraction"] == 1.0


def test_the_conditioning_rows_default_to_the_shipped_ablation_models(tmp_path, monkeypatch):
    import toyworld.weights as weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    assert _parser().parse_args([]).cam_model is None  # none shipped: the rows need them given
    for name in ("cam", "conc_cond"):
        (tmp_path / "ablation" / name).mkdir(parents=True)
        (tmp_path / "ablation" / name / "streamingt2v.json").write_text("{}")
    args = _parser().parse_args(["--cam-model", "mine"])
    assert (args.cam_model, args.conc_cond_model) == ("mine", str(tmp_path / "ablation" / "conc_cond"))

"""``streamingt2v train``: in-process training resumes from its run directory and its export's
training curve is drawn; bad input exits 2."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from models.params import flatten
from training.curve import main as curve_main
from training.run import TrainConfig


@pytest.mark.integration  # whole `streamingt2v train` runs
def test_local_training_exports_and_resumes(tmp_path, tiny_base_dir, capsys):
    run_dir, out = tmp_path / "run", tmp_path / "model"
    args = ["train", "--engine", "local", "--stage", "cam", "--init", tiny_base_dir, "--steps", "1", "--batch-size",
            "1", "--fps", "10", "--checkpoint-every", "1", "--run-dir", str(run_dir), "--out", str(out)]
    assert main(args) == 0
    assert json.loads((out / "training.json").read_text())["step"] == 1
    assert main([*args[:-4], "--steps", "2", "--run-dir", str(run_dir), "--out", str(out)]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert [h[0] for h in json.loads((out / "training.json").read_text())["history"]] == [1, 2]

    # The training curve of the export (python -m training.curve).
    png = tmp_path / "curve.png"
    assert curve_main([str(tmp_path), "--out", str(png)]) == 0  # a folder of exports
    assert curve_main([str(out), "--out", str(png)]) == 0  # one export
    assert png.read_bytes().startswith(b"\x89PNG") and "model (cam): 2 steps" in capsys.readouterr().out
    assert curve_main([str(run_dir / "nothing"), "--out", str(png)]) == 2


def test_bad_input_exits_2_naming_the_field(tmp_path, capsys):
    assert main(["train", "--stage", "cam", "--steps", "1", "--run-dir", str(tmp_path)]) == 2
    assert "init" in capsys.readouterr().err
    assert main(["train", "--stage", "base", "--steps", "1", "--engine", "spark", "--run-dir", str(tmp_path)]) == 2
    assert "engine" in capsys.readouterr().err
    assert main(["train", "--stage", "base", "--steps", "1", "--offset-noise", "2", "--run-dir", str(tmp_path)]) == 2
    assert "offset_noise" in capsys.readouterr().err
    assert main(["train", "--stage", "base", "--steps", "10", "--decay-steps", "20", "--run-dir", str(tmp_path)]) == 2
    assert "decay_steps" in capsys.readouterr().err
    assert main(["train", "--stage", "cam", "--init", "x", "--steps", "1", "--control-text", "none",
                 "--run-dir", str(tmp_path)]) == 2
    assert "control_text" in capsys.readouterr().err
    assert main(["train", "--stage", "cam_apm", "--init", "x", "--steps", "1", "--condition-noise", "0.5",
                 "--run-dir", str(tmp_path)]) == 2  # degrades decoded conditions only
    assert "condition_noise" in capsys.readouterr().err
    assert main(["train", "--stage", "cam", "--init", "x", "--steps", "1", "--apm-lr", "1e-3",
                 "--run-dir", str(tmp_path)]) == 2  # stage 1 does not train APM
    assert "apm_lr" in capsys.readouterr().err
    assert main(["train", "--stage", "cam", "--init", "x", "--steps", "1", "--main-branch", "temporal",
                 "--run-dir", str(tmp_path)]) == 2
    assert "main_branch" in capsys.readouterr().err
    assert main(["train", "--stage", "cam", "--init", "x", "--steps", "1", "--apm-only",
                 "--run-dir", str(tmp_path)]) == 2  # stage 1 gives APM no anchor
    assert "apm_only" in capsys.readouterr().err


@pytest.mark.integration  # whole `streamingt2v train` runs
def test_noise_schedule_and_condition_options_reach_the_exported_config(tmp_path, tiny_base_dir):
    out = tmp_path / "model"
    assert main(["train", "--engine", "local", "--stage", "cam", "--init", tiny_base_dir, "--steps", "2",
                 "--batch-size", "1", "--fps", "10", "--timestep-sampling", "cubic", "--offset-noise", "0.1",
                 "--warmup-steps", "1", "--decay-steps", "1", "--decoded-condition", "--control-text", "empty",
                 "--condition-noise", "0.3", "--main-branch", "spatial", "--run-dir", str(tmp_path / "run"),
                 "--out", str(out)]) == 0
    config = flatten(TrainConfig.from_dict(json.loads((out / "training.json").read_text())["config"]))
    assert (config["timestep_sampling"], config["offset_noise"]) == ("cubic", 0.1)
    assert (config["warmup_steps"], config["decay_steps"], config["decoded_condition"]) == (1, 1, True)
    assert (config["condition_noise"], config["main_branch"]) == (0.3, "spatial")
    assert json.loads((out / "unet" / "config.json").read_text())["cam_config"]["control_text"] == "empty"


@pytest.mark.integration  # whole `streamingt2v train` runs
def test_a_clip_stage_exports_the_clip_a_cam_stage_then_takes_with_image_encoder(tmp_path, tiny_base_dir):
    import torch

    from models.clip_image import load_image_encoder
    from models.streaming_t2v import StreamingT2V

    clip = tmp_path / "clip"
    assert main(["train", "--engine", "local", "--stage", "clip", "--steps", "2", "--batch-size", "4", "--fps", "10",
                 "--run-dir", str(tmp_path / "clip-run"), "--out", str(clip)]) == 0
    assert json.loads((clip / "training.json").read_text())["stage"] == "clip"
    out = tmp_path / "cam"
    assert main(["train", "--engine", "local", "--stage", "cam", "--init", tiny_base_dir, "--steps", "1",
                 "--batch-size", "1", "--fps", "10", "--image-encoder", str(clip),
                 "--run-dir", str(tmp_path / "cam-run"), "--out", str(out)]) == 0
    tower, used = load_image_encoder(clip), StreamingT2V.from_pretrained(out).image_encoder
    assert all(torch.equal(a, b) for a, b in zip(tower.state_dict().values(), used.state_dict().values()))


def test_gradient_checkpointing_gives_the_same_step(tiny_base_dir):
    import torch

    from training.data import local_batches
    from training.run import TrainConfig, TrainingRun

    losses = []
    for checkpointing in (False, True):
        run = TrainingRun(TrainConfig(stage="cam", steps=2, init=tiny_base_dir, batch_size=1, fps=10,
                                      gradient_checkpointing=checkpointing))
        batches = local_batches(run.source(), 1)
        for _ in range(2):
            run.train_step(*next(batches))
        losses.append([h[1] for h in run.history])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)

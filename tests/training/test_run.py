"""A training run's checkpoints remember the model they started from."""

from __future__ import annotations

import shutil

import pytest
import torch

from models.errors import ConfigError
from models.video_ldm import VideoLDM
from training.run import TrainConfig, TrainingRun, init_fingerprint, latest_checkpoint, train_in_process


def test_resuming_after_the_init_model_changed_is_refused(tmp_path, tiny_base_dir):
    init = tmp_path / "init"
    shutil.copytree(tiny_base_dir, init)
    config = TrainConfig(stage="cam", steps=1, init=str(init), batch_size=1, fps=10, checkpoint_every=1)
    train_in_process(config, tmp_path / "run", log=lambda *_: None)
    checkpoint = latest_checkpoint(tmp_path / "run")
    before = init_fingerprint(str(init))

    TrainingRun(config).load_checkpoint(checkpoint)  # same init: resumes
    (init / "training.json").write_text("{}")  # metadata only: still the same model
    TrainingRun(config).load_checkpoint(checkpoint)

    retrained = VideoLDM.from_pretrained(init)  # an earlier stage retrained: new weights
    with torch.no_grad():
        retrained.unet.conv_in.weight.add_(0.01)
    retrained.save_pretrained(init)
    assert init_fingerprint(str(init)) != before
    with pytest.raises(ConfigError) as err:
        TrainingRun(config).load_checkpoint(checkpoint)
    assert err.value.field == "init" and "has changed" in str(err.value)

"""Model sources: the tiny preset loads the toy-world model from the weights directory
(weights='trained') or builds fixed random weights (weights='random')."""

from __future__ import annotations

import pytest
import torch

import toyworld.weights
from models.errors import ConfigError
from stages.sources import ModelSources
from toyworld.weights import MODELS


@pytest.fixture
def weights_dir(monkeypatch, tmp_path, tiny_base_dir, tiny_cam_dir):
    """A weights directory laid out as the shipped one, holding tiny models trained on nothing."""
    import shutil

    for name, source in zip(MODELS, (tiny_base_dir, tiny_cam_dir, tiny_base_dir)):
        shutil.copytree(source, tmp_path / name)
    monkeypatch.setattr(toyworld.weights, "WEIGHTS_DIR", tmp_path)
    return tmp_path


def test_trained_weights_come_from_the_weights_directory(weights_dir):
    sources = ModelSources(weights="trained")
    for option, name in zip(("base_model", "streaming_model", "refiner"), MODELS):
        assert sources.location(option) == str(weights_dir / name)
    assert sources.load_streaming().has_apm and sources.load_refiner().video.frames_per_chunk == 16
    assert not torch.equal(sources.load_video_ldm().unet.conv_in.weight,
                           ModelSources(weights="random", weights_seed=3).load_video_ldm().unet.conv_in.weight)
    assert ModelSources(weights="trained", base_model="/elsewhere").location("base_model") == "/elsewhere"


def test_random_weights_are_built_from_the_preset():
    sources = ModelSources(weights="random")
    assert sources.location("refiner") is None
    a, b = sources.load_video_ldm(), ModelSources(weights="random", weights_seed=1).load_video_ldm()
    assert not torch.equal(a.unet.conv_in.weight, b.unet.conv_in.weight)


def test_real_presets_need_their_models_unless_random_is_asked_for():
    with pytest.raises(ConfigError) as err:
        ModelSources(preset="modelscope")
    assert err.value.field == "base_model"
    random = ModelSources(preset="modelscope", weights="random")
    assert random.location("base_model") is None and random.location("refiner") is None
    assert ModelSources().weights == "trained"  # tiny: the shipped toy-world model


def test_bad_weights_and_missing_weights_name_the_field(monkeypatch, tmp_path):
    with pytest.raises(ConfigError) as err:
        ModelSources(weights="pretrained")
    assert err.value.field == "weights"
    monkeypatch.setattr(toyworld.weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ConfigError) as err:
        ModelSources(weights="trained").load_refiner()
    assert err.value.field == "weights" and "weights='random'" in str(err.value)


def test_a_slow_cpu_dtype_is_warned_once_per_process(monkeypatch, caplog):
    import stages.sources

    monkeypatch.setattr(stages.sources, "slow_on_this_cpu", lambda dtype: dtype != "float32")
    stages.sources._warn_if_slow_on_cpu.cache_clear()
    with caplog.at_level("WARNING", logger="stages.sources"):
        ModelSources(dtype="bfloat16")
        ModelSources(dtype="bfloat16", weights="random")
        ModelSources(dtype="float32")
        ModelSources(dtype="float16", device="cuda")  # computes on a GPU
        ModelSources(dtype="float16", device="cpu", low_memory=True)  # low memory: the models' resting place
    stages.sources._warn_if_slow_on_cpu.cache_clear()
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "bfloat16" in warnings[0] and "--dtype float32" in warnings[0]

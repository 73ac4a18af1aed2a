"""The shipped toy-world model: each directory is a finished run of its recipe stage (README.md
beside the weights), loadable, and the tiny preset's default."""

from __future__ import annotations

import json

import pytest
import torch

from models.streaming_t2v import conditioning_of
from stages.sources import ModelSources
from toyworld.weights import ABLATION_MODELS, MODELS, ablation_model, model_dir

STAGES = {"base": "base", "streaming": "cam_apm", "refiner": "refiner"}


@pytest.mark.parametrize("name", MODELS)
def test_each_shipped_model_finished_its_recipe_stage(name):
    record = json.loads((model_dir(name) / "training.json").read_text())
    config = record["config"]
    assert record["stage"] == STAGES[name] and config["seed"] == 0 and config["data"] == "toyworld"
    assert record["step"] == config["steps"]
    assert [step for step, _ in record["history"]] == list(range(1, config["steps"] + 1))
    assert all(loss == loss and loss >= 0 for _, loss in record["history"])  # finite, a real curve


BUDGET = ("init", "steps", "batch_size", "lr", "warmup_steps", "decay_steps", "timestep_sampling", "offset_noise",
          "decoded_condition", "dropout", "seed", "fps", "data")


def test_the_shipped_ablation_models_are_finished_runs_with_the_same_budget():
    shipped = {name: ablation_model(name) for name in ABLATION_MODELS}
    records = {name: json.loads((path / "training.json").read_text()) for name, path in shipped.items() if path}
    for name, record in records.items():
        assert record["stage"] == name.removeprefix("ablation/") and record["step"] == record["config"]["steps"]
        assert conditioning_of(shipped[name]) == {"ablation/cam": "cam", "ablation/conc_cond": "conc-cond"}[name]
    if len(records) == 2:  # the paper's comparison: the same budget from the same base (App. D.1)
        cam, conc = (records[name]["config"] for name in ABLATION_MODELS)
        assert {k: cam[k] for k in BUDGET} == {k: conc[k] for k in BUDGET}


def test_the_tiny_default_is_the_shipped_model():
    sources = ModelSources()
    assert sources.weights == "trained" and sources.location("streaming_model") == str(model_dir("streaming"))
    streaming = sources.load_streaming()
    assert streaming.has_apm and conditioning_of(model_dir("streaming")) == "cam"
    random = ModelSources(weights="random").load_video_ldm()
    assert not torch.equal(sources.load_video_ldm().unet.conv_in.weight, random.unet.conv_in.weight)

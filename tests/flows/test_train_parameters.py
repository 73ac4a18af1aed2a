"""Every TrainConfig parameter reaches both training boundaries from its one definition
(training/run.py): the flags of ``streamingt2v train`` and the parameters of the
train-streamingt2v flow, which applies each option to the stages it concerns."""

from __future__ import annotations

import hashlib
import json

import pytest

from flows.train import FLOW_SETS, STAGE_OPTIONS, lineage, stage_configs, train_streamingt2v
from infra.params import flag, from_arguments
from models.params import leaves
from toyworld.weights import model_dir
from training.cli import _parser
from training.objectives import Dropout
from training.run import BeyondPaper, TrainConfig

PARAMETERS = list(leaves(TrainConfig))


def test_the_cli_has_a_flag_per_parameter_with_its_default():
    actions = {a.dest: a for a in _parser()._actions}
    for leaf in PARAMETERS:
        action = actions[leaf.name]
        assert flag(leaf) in action.option_strings, leaf.name
        assert action.required == (leaf.name in ("stage", "steps")), leaf.name
        if not leaf.required:
            assert action.default == leaf.default, leaf.name


def test_the_flow_takes_every_parameter_but_those_it_sets_per_stage():
    properties = train_streamingt2v.parameters.properties
    for leaf in PARAMETERS:
        if leaf.name in FLOW_SETS:
            continue
        assert leaf.name in properties, leaf.name
        assert properties[leaf.name]["default"] == leaf.default, leaf.name
    assert "stage" not in properties and {"stages", "steps", "init"} <= set(properties)
    assert set(STAGE_OPTIONS) <= {leaf.name for leaf in PARAMETERS}


def test_the_documented_flags_parse_into_the_config():
    args = _parser().parse_args(["--stage", "base", "--steps", "10", "--batch-size", "4", "--lr", "1e-4",
                                 "--train-text-encoder", "--tokenizer", "toyworld", "--offset-noise", "0.1",
                                 "--decay-steps", "5", "--dropout-text", "0.1", "--run-dir", "run"])
    config = TrainConfig.from_dict(from_arguments(args, TrainConfig))
    assert config == TrainConfig(stage="base", steps=10, batch_size=4, lr=1e-4,
                                 dropout=Dropout(text=0.1),
                                 beyond=BeyondPaper(train_text_encoder=True, tokenizer="toyworld", offset_noise=0.1,
                                                    decay_steps=5))


def test_a_single_stage_of_the_flow_is_the_cli_stage():
    """The same options give the same config on either boundary."""
    options = {"fps": 10.0, "batch_size": 2, "lr": 1e-3, "decoded_condition": True, "condition_noise": 0.3,
               "main_branch": "spatial", "control_text": "empty", "timestep_sampling": "cubic"}
    [flow_config] = stage_configs(["cam"], [5], "base-dir", "run", options)
    args = _parser().parse_args(["--stage", "cam", "--steps", "5", "--init", "base-dir", "--fps", "10", "--batch-size",
                                 "2", "--lr", "1e-3", "--decoded-condition", "--condition-noise", "0.3",
                                 "--main-branch", "spatial", "--control-text", "empty", "--timestep-sampling", "cubic",
                                 "--run-dir", "run"])
    assert flow_config == TrainConfig.from_dict(from_arguments(args, TrainConfig))


def test_each_stage_of_a_run_takes_the_options_that_concern_it():
    options = {"lr": 1e-3, "weight_decay": 0.01, "train_text_encoder": True, "tokenizer": "toyworld",
               "decoded_condition": True, "condition_noise": 0.5, "main_branch": "spatial", "apm_lr": 1e-2,
               "offset_noise": 0.1, "dropout_anchor": 0.2}
    base, clip, cam, apm = stage_configs(["base", "clip", "cam", "cam_apm"], [3, 2, 2, 1], None, "run", options)
    assert (base.init, clip.init, cam.init, apm.init) == (None, None, "run/base/model", "run/cam/model")
    assert all(c.lr == 1e-3 and c.weight_decay == 0.01 for c in (base, clip, cam, apm))
    assert (base.beyond.train_text_encoder, base.beyond.tokenizer) == (True, "toyworld")
    assert not cam.beyond.train_text_encoder and cam.beyond.tokenizer is None
    assert clip.beyond == BeyondPaper() and clip.dropout == TrainConfig(stage="clip", steps=1).dropout
    assert (cam.beyond.main_branch, apm.beyond.main_branch) == ("spatial", "frozen")
    assert (cam.beyond.apm_lr, apm.beyond.apm_lr) == (None, 1e-2)
    assert [c.beyond.condition_noise for c in (base, cam, apm)] == [0.0, 0.5, 0.5]
    assert [c.beyond.offset_noise for c in (base, cam, apm)] == [0.1, 0.1, 0.1]
    assert cam.dropout.anchor == apm.dropout.anchor == 0.2
    # after a clip stage, the conditioned stages embed their anchors with its model
    assert (base.image_encoder, cam.image_encoder, apm.image_encoder) == (None, "run/clip/model", "run/clip/model")


def test_the_flow_refuses_out_of_range_parameters_before_a_run():
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError, match="offset_noise"):
        train_streamingt2v.validate_parameters({"stages": ["base"], "run_uri": "r", "offset_noise": 2.0})
    with pytest.raises(ParameterTypeError, match="mixed_precision"):
        train_streamingt2v.validate_parameters({"stages": ["base"], "run_uri": "r", "mixed_precision": "fp8"})


@pytest.mark.parametrize("name", ["base", "streaming", "refiner"])
def test_a_models_lineage_is_the_same_whether_its_config_is_flat_or_nested(tmp_path, name):
    """The flow keeps a later stage's checkpoints under a hash of the earlier stage's record:
    a record written before the ``beyond`` group (flat, as most shipped models' are) and the same
    record written since (nested, as the refiner's) give the same one, so a run re-exported since
    resumes."""
    shipped = model_dir(name) / "training.json"
    record = json.loads(shipped.read_text())
    config = TrainConfig.from_dict(record["config"])
    full = {**record, "config": config.flat_dict()}  # what an export wrote just before the group
    if "beyond" not in record["config"]:  # a flat record is hashed as it was written
        assert lineage(str(model_dir(name))) == hashlib.sha256(shipped.read_bytes()).hexdigest()[:16]
    else:  # a nested one as its flat form
        assert lineage(str(model_dir(name))) == hashlib.sha256(json.dumps(full).encode()).hexdigest()[:16]
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "training.json").write_text(json.dumps(full))
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "training.json").write_text(json.dumps({**record, "config": config.to_dict()}))
    assert lineage(str(tmp_path / "nested")) == lineage(str(tmp_path / "flat")) == hashlib.sha256(
        json.dumps(full).encode()).hexdigest()[:16]

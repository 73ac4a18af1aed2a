"""TrainConfig's records: the nested form it writes, and the flat form of the configs recorded
before the options beyond the paper became a group (the shipped models' ``training.json``, older
checkpoints), which it still reads, so such a checkpoint resumes and exports as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from models.errors import ConfigError
from models.params import flatten, leaves
from training.export_checkpoint import export_checkpoint
from training.objectives import Dropout
from training.run import FLAT_LAYOUT, STATE_FILE, BeyondPaper, TrainConfig, latest_checkpoint, train_in_process

WEIGHTS = Path(__file__).resolve().parents[2] / "toyworld" / "weights"
SHIPPED = sorted(WEIGHTS.glob("**/training.json"))


def test_the_toy_world_ships_training_records():
    assert {p.parent.name for p in SHIPPED} >= {"base", "streaming", "refiner"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.parent.relative_to(WEIGHTS)))
def test_every_shipped_training_record_loads(path):
    recorded = json.loads(path.read_text())["config"]
    config = TrainConfig.from_dict(recorded)
    flat = config.flat_dict()
    if "beyond" in recorded:  # written nested (since the beyond group): it is the config's nested form
        assert config.to_dict() == recorded
    else:  # written flat: what it records, and the defaults for the rest
        assert {name: flat[name] for name in recorded} == recorded
    assert TrainConfig.from_dict(config.to_dict()) == TrainConfig.from_dict(flat) == config


def test_the_nested_form_round_trips_and_the_flat_form_keeps_its_layout():
    config = TrainConfig(stage="cam_apm", steps=10, init="cam", dropout=Dropout(0.1, 0.2, 0.3),
                         beyond=BeyondPaper(decay_steps=3, decoded_condition=True, condition_noise=0.5, apm_lr=1e-3))
    nested = config.to_dict()
    assert nested["beyond"]["condition_noise"] == 0.5 and "condition_noise" not in nested
    assert nested["dropout"] == {"text": 0.1, "anchor": 0.2, "both": 0.3}
    assert TrainConfig.from_dict(json.loads(json.dumps(nested))) == config
    assert tuple(config.flat_dict()) == FLAT_LAYOUT  # every field, in the order configs were recorded in
    assert TrainConfig.from_dict(flatten(config)) == config  # the boundaries' names (dropout_text, ...)
    names = {leaf.path[-1] if leaf.path[0] == "beyond" else leaf.path[0] for leaf in leaves(TrainConfig)}
    assert set(FLAT_LAYOUT) <= names  # the fields added since are written only away from their defaults:
    later = TrainConfig(stage="refiner", steps=1, init="base", beyond=BeyondPaper(upscaled_input=True)).flat_dict()
    assert tuple(later) == (*FLAT_LAYOUT, "upscaled_input")
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"stage": "base", "steps": 1, "offset_noise": 0.1, "beyond": {"offset_noise": 0.2}})
    assert err.value.field == "offset_noise"
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"stage": "base", "steps": 1, "ema": 0.99})
    assert err.value.field == "ema"


@pytest.mark.integration  # whole training runs (train_in_process: checkpoints, resume, export)
def test_a_checkpoint_with_a_flat_config_resumes_and_exports_as_before(tmp_path, tiny_base_dir):
    """A run directory whose checkpoint recorded its config flat resumes to the same bits as one
    that recorded it nested, and the checkpoint exports with the config it recorded."""
    config = TrainConfig(stage="base", steps=2, init=tiny_base_dir, batch_size=1, fps=10, lr=1e-3, checkpoint_every=1,
                         beyond=BeyondPaper(offset_noise=0.1, decay_steps=1, timestep_sampling="cubic"))
    quiet = dict(log=lambda *_: None)
    train_in_process(TrainConfig.from_dict({**config.to_dict(), "steps": 1}), tmp_path / "nested", **quiet)
    shutil.copytree(tmp_path / "nested", tmp_path / "flat")
    state_file = latest_checkpoint(tmp_path / "flat") / STATE_FILE
    state = json.loads(state_file.read_text())
    assert "beyond" in state["config"]
    state["config"] = TrainConfig.from_dict(state["config"]).flat_dict()
    state_file.write_text(json.dumps(state))

    flat, nested = (train_in_process(config, tmp_path / name, **quiet) for name in ("flat", "nested"))
    assert flat.step == nested.step == 2 and flat.history == nested.history
    a, b = flat.trainable_state(), nested.trainable_state()
    assert all(torch.equal(a[k], b[k]) for k in a)

    assert export_checkpoint(str(state_file.parent), str(tmp_path / "at1")) == 1
    record = json.loads((tmp_path / "at1" / "training.json").read_text())
    assert TrainConfig.from_dict(record["config"]) == TrainConfig.from_dict({**config.to_dict(), "steps": 1})

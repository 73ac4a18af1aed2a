"""Shipping a trained model as toy-world weights: float16 on disk, the float16-rounded trained
values when loaded, float32 master weights when training starts from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from models.errors import ConfigError
from models.video_ldm import VideoLDM
from toyworld.ship import main, ship
from training.run import TrainConfig, build_model


@pytest.fixture()
def trained_dir(tmp_path, tiny_base_dir):
    source = tmp_path / "base-model"
    shutil.copytree(tiny_base_dir, source)
    (source / "training.json").write_text(json.dumps({"stage": "base", "step": 1}))
    return source


def _dtypes(path: Path) -> set[torch.dtype]:
    with safe_open(str(path), framework="pt") as f:
        return {f.get_tensor(k).dtype for k in f.keys()}


def test_shipped_weights_are_float16_and_load_as_the_rounded_trained_values(trained_dir, tmp_path):
    target = ship(trained_dir, "base", weights_dir=tmp_path / "weights")
    assert target == tmp_path / "weights" / "base"
    assert json.loads((target / "training.json").read_text()) == {"stage": "base", "step": 1}
    assert _dtypes(target / "unet" / "diffusion_pytorch_model.safetensors") == {torch.float16}
    before = sum(f.stat().st_size for f in trained_dir.rglob("*.safetensors"))
    after = sum(f.stat().st_size for f in target.rglob("*.safetensors"))
    assert after < 0.55 * before

    trained = VideoLDM.from_pretrained(trained_dir)
    shipped = VideoLDM.from_pretrained(target, torch_dtype=torch.float32)
    for net in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(shipped, net).state_dict(), getattr(trained, net).state_dict()
        for key, value in theirs.items():
            expected = value.half().float() if value.is_floating_point() else value
            assert ours[key].dtype == value.dtype and torch.equal(ours[key], expected), (net, key)


def test_training_from_shipped_weights_keeps_float32_master_weights(trained_dir, tmp_path):
    target = ship(trained_dir, "base", weights_dir=tmp_path / "weights")
    model = build_model(TrainConfig(stage="cam", steps=1, init=str(target)))
    assert {p.dtype for p in model.unet.parameters()} == {torch.float32}


def test_shipping_again_replaces_the_model_whole(trained_dir, tmp_path):
    weights = tmp_path / "weights"
    stale = weights / "base" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an older ship")
    ship(trained_dir, "base", weights_dir=weights)
    assert not stale.exists() and [p.name for p in weights.iterdir()] == ["base"]


def test_an_ablation_model_ships_under_ablation_and_is_found_there(trained_dir, tmp_path, monkeypatch):
    import toyworld.weights as weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "weights")
    assert weights.ablation_model("ablation/conc_cond") is None  # not shipped yet
    target = ship(trained_dir, "ablation/conc_cond", weights_dir=tmp_path / "weights")
    assert target == tmp_path / "weights" / "ablation" / "conc_cond"
    assert sorted(p.name for p in target.parent.iterdir()) == ["conc_cond"]  # no staging left behind
    assert weights.ablation_model("ablation/conc_cond") == target
    assert all(_dtypes(f) == {torch.float16} for f in target.rglob("*.safetensors"))
    with pytest.raises(ConfigError, match="model"):
        weights.ablation_model("conc_cond")


def test_bad_input_names_the_field(trained_dir, tmp_path, capsys):
    with pytest.raises(ConfigError, match="name"):
        ship(trained_dir, "vae", weights_dir=tmp_path)
    with pytest.raises(ConfigError, match="dtype"):
        ship(trained_dir, "base", dtype="int8", weights_dir=tmp_path)
    assert main([str(tmp_path / "missing"), "base"]) == 2
    assert "source" in capsys.readouterr().err

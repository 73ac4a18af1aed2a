"""The Prefect flow train-streamingt2v: the paper's two stages in a row on Ray Train, resumable."""

from __future__ import annotations

import json

import pytest

from infra import storage

pytestmark = pytest.mark.integration


def _config(model_uri: str) -> dict:
    """The flat parameters of the config an exported model was trained with."""
    from models.params import flatten
    from training.run import TrainConfig

    record = json.loads(storage.read_bytes(storage.join(model_uri, "training.json")))
    return flatten(TrainConfig.from_dict(record["config"]))


def test_two_stages_chain_and_a_rerun_resumes(prefect_harness, ray_local, tmp_path, tiny_base_dir):
    from flows.train import train_streamingt2v
    from models.streaming_t2v import StreamingT2V

    run_uri = str(tmp_path / "run")
    params = dict(stages=["cam", "cam_apm"], run_uri=run_uri, steps=[2, 1], init=tiny_base_dir, fps=10,
                  batch_size=1, checkpoint_every=1, lr=1e-3, control_text="empty", decoded_condition=True,
                  condition_noise=0.5, apm_lr=1e-2, main_branch="spatial")
    results = train_streamingt2v(**params)
    assert results["cam"]["step"] == 2 and results["cam_apm"]["step"] == 1
    configs = {stage: _config(results[stage]["model"]) for stage in ("cam", "cam_apm")}
    assert [configs[s]["condition_noise"] for s in configs] == [0.5, 0.5]
    assert [configs[s]["apm_lr"] for s in configs] == [None, 1e-2]  # only stage 2 trains APM
    assert [configs[s]["main_branch"] for s in configs] == ["spatial", "frozen"]  # a stage-1 option
    assert "apm_gate" in results["cam_apm"] and "apm_gate" not in results["cam"]  # reported from Ray Train
    model = StreamingT2V.from_pretrained(results["cam_apm"]["model"])
    # Stage cam_apm keeps the CAM stage cam trained, text-free control branch included.
    assert model.has_apm and model.unet.cam.config.control_text == "empty"
    history = json.loads(storage.read_bytes(storage.join(results["cam"]["model"], "training.json")))["history"]
    assert [h[0] for h in history] == [1, 2]

    again = train_streamingt2v(**{**params, "steps": [3, 1]})  # cam continues from step 2
    history = json.loads(storage.read_bytes(storage.join(again["cam"]["model"], "training.json")))["history"]
    assert [h[0] for h in history] == [1, 2, 3]
    # cam_apm was trained on the 2-step cam: it starts afresh from the 3-step one, the old
    # checkpoints stay where they were.
    versions = sorted(p.name for p in (tmp_path / "run" / "cam_apm" / "from").iterdir())
    assert len(versions) == 2 and again["cam_apm"]["step"] == 1


def test_a_clip_stage_embeds_the_anchors_of_the_stages_after_it(prefect_harness, ray_local, tmp_path, tiny_base_dir):
    """["clip", "cam"]: the CLIP is trained from scratch and is not cam's init (the Video-LDM is);
    cam's model embeds anchors with the CLIP's image tower."""
    import torch

    from flows.train import train_streamingt2v
    from models.clip_image import load_image_encoder
    from models.streaming_t2v import StreamingT2V

    results = train_streamingt2v(stages=["clip", "cam"], run_uri=str(tmp_path / "run"), steps=[1, 1],
                                 init=tiny_base_dir, fps=10, batch_size=2, checkpoint_every=1)
    tower = load_image_encoder(results["clip"]["model"])
    model = StreamingT2V.from_pretrained(results["cam"]["model"])
    assert all(torch.equal(a, b) for a, b in zip(tower.state_dict().values(), model.image_encoder.state_dict().values()))
    config = _config(results["cam"]["model"])
    assert (config["init"], config["image_encoder"]) == (tiny_base_dir, results["clip"]["model"])


@pytest.mark.parametrize("params,field", [
    (dict(stages=["warp"]), "stages"),
    (dict(stages=["cam", "cam_apm"], steps=[1]), "steps"),
    (dict(stages=["cam"]), "init"),
    (dict(stages=["base"], mixed_precision="fp8"), "mixed_precision"),
    (dict(stages=["base"], batch_size=0), "batch_size"),
    (dict(stages=["base", "cam"], steps=[100, 10], decay_steps=50), "decay_steps"),
    (dict(stages=["cam"], init="x", control_text="none"), "control_text"),
    (dict(stages=["cam"], init="x", condition_noise=0.5), "condition_noise"),  # needs decoded_condition
    (dict(stages=["cam_apm"], init="x", apm_lr=0.0), "apm_lr"),
    (dict(stages=["cam"], init="x", main_branch="temporal"), "main_branch"),
    (dict(stages=["cam_apm"], init="x", apm_only=True, apm_lr=1e-3), "apm_lr"),  # APM is all that trains
])
def test_invalid_parameters_are_rejected_before_any_work(prefect_harness, tmp_path, params, field):
    from flows.train import train_streamingt2v

    run_uri = tmp_path / "run"
    with pytest.raises(Exception) as info:
        train_streamingt2v(**{"run_uri": str(run_uri), **params})
    assert field in str(info.value)
    assert not run_uri.exists()

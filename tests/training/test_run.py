"""A training run's checkpoints remember the model they started from; its lr schedule is a
function of the step and the config, so resuming into a decay equals training it from scratch."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from models.errors import ConfigError
from models.video_ldm import VideoLDM
from training.objectives import Dropout
from training.run import (BeyondPaper, TrainConfig, TrainingRun, build_model, init_fingerprint, latest_checkpoint,
                          train_in_process)


@pytest.mark.integration  # whole training runs (train_in_process: checkpoints, export)
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


@pytest.mark.integration  # whole training runs (train_in_process: checkpoints, export)
def test_a_base_stage_with_the_toy_world_tokenizer_learns_its_words_and_resumes(tmp_path, tiny_base_dir):
    """--tokenizer toyworld: the exported model tokenizes each caption word as one token, its text
    encoder has an embedding per token (and trained them), and a resumed run continues bit for bit."""
    config = TrainConfig(stage="base", steps=2, init=tiny_base_dir, batch_size=2, fps=10, lr=1e-3,
                         checkpoint_every=1, beyond=BeyondPaper(train_text_encoder=True, tokenizer="toyworld"))
    run = train_in_process(config, tmp_path / "run", out=tmp_path / "model", log=lambda *_: None)
    model = VideoLDM.from_pretrained(tmp_path / "model")
    words = model.tokenizer("a red circle moving left on a striped background", add_special_tokens=False).input_ids
    assert len(words) == 9 and model.text_encoder.config.vocab_size == len(model.tokenizer)
    start = VideoLDM.from_pretrained(tiny_base_dir)
    assert model.text_encoder.get_input_embeddings().weight.shape[0] > start.text_encoder.config.vocab_size

    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-00000002")
    resumed = train_in_process(config, tmp_path / "run", log=lambda *_: None)  # from step 1
    assert resumed.step == 2
    for (name, a), b in zip(run.model.text_encoder.state_dict().items(), resumed.model.text_encoder.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_learning_rate_warms_up_holds_and_decays_as_configured():
    config = TrainConfig(stage="base", steps=10, lr=1e-3, beyond=BeyondPaper(warmup_steps=2, decay_steps=4))
    lrs = [config.learning_rate(s) for s in range(1, 11)]
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert config.learning_rate(11) == config.learning_rate(12) == pytest.approx(2.5e-4)  # stepping on
    assert [TrainConfig(stage="base", steps=3, lr=2e-4).learning_rate(s) for s in (1, 2, 3, 4)] == [2e-4] * 4


@pytest.mark.parametrize("field, values", [("warmup_steps", {"warmup_steps": -1}),
                                           ("decay_steps", {"decay_steps": 11}),
                                           ("decay_steps", {"warmup_steps": 5, "decay_steps": 6})])
def test_a_schedule_longer_than_the_run_is_refused_naming_the_field(field, values):
    with pytest.raises(ConfigError) as err:
        TrainConfig(stage="base", steps=10, beyond=BeyondPaper(**values))
    assert err.value.field == field
    if field == "decay_steps":
        assert f"[0, {10 - values.get('warmup_steps', 0)}]" in str(err.value)


@pytest.mark.integration  # whole training runs (train_in_process: checkpoints, export)
def test_adding_a_decay_and_resuming_a_constant_run_equals_the_decayed_run_from_scratch(tmp_path, tiny_base_dir):
    """The lr is the config's at every step, not the one a checkpoint's optimizer state saved:
    a run trained 2 steps at constant lr, then resumed with --decay-steps 2 to 4 steps, ends with
    the same bits as 4 steps with the decay from the start (whose first 2 steps are at full lr)."""
    common = dict(stage="cam", init=tiny_base_dir, batch_size=1, fps=10, lr=1e-3, checkpoint_every=1)
    train_in_process(TrainConfig(steps=2, **common), tmp_path / "a", log=lambda *_: None)
    decay = BeyondPaper(decay_steps=2)
    resumed = train_in_process(TrainConfig(steps=4, beyond=decay, **common), tmp_path / "a", log=lambda *_: None)
    scratch = train_in_process(TrainConfig(steps=4, beyond=decay, **common), tmp_path / "b", log=lambda *_: None)
    constant = train_in_process(TrainConfig(steps=4, **common), tmp_path / "c", log=lambda *_: None)
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [5e-4] * len(resumed.optimizer.param_groups)
    assert resumed.apm_gates() == [] and resumed.metrics(0.5) == {"loss": 0.5, "step": 4}  # stage 1 leaves APM shut
    a, b, c = resumed.trainable_state(), scratch.trainable_state(), constant.trainable_state()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the decay did change the last two steps


@pytest.mark.integration  # whole training runs (train_in_process: checkpoints, export)
def test_an_image_encoder_option_gives_the_anchor_model_that_clip_and_keeps_it_frozen(tmp_path, tiny_cam_dir):
    """--image-encoder: stage 2 embeds anchors with the given CLIP's image tower (e.g. a
    ``--stage clip`` result), trains without touching it, exports it, and a checkpoint trained
    with one CLIP is not resumed with another."""
    from models.clip_image import CLIPPair, load_image_encoder
    from models.streaming_t2v import StreamingT2V

    for seed in (1, 2):
        CLIPPair.from_preset("tiny", seed=seed).save_pretrained(tmp_path / f"clip{seed}")
    config = TrainConfig(stage="cam_apm", steps=1, init=tiny_cam_dir, batch_size=1, fps=10, checkpoint_every=1,
                         image_encoder=str(tmp_path / "clip1"))
    train_in_process(config, tmp_path / "run", out=tmp_path / "model", log=lambda *_: None)
    tower = load_image_encoder(tmp_path / "clip1")
    exported = StreamingT2V.from_pretrained(tmp_path / "model").image_encoder
    for (name, a), b in zip(tower.state_dict().items(), exported.state_dict().values()):
        assert torch.equal(a, b), name

    TrainingRun(config).load_checkpoint(latest_checkpoint(tmp_path / "run"))  # same CLIP: resumes
    other = replace(config, image_encoder=str(tmp_path / "clip2"))
    with pytest.raises(ConfigError) as err:
        TrainingRun(other).load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert err.value.field == "init"


def test_a_missing_image_encoder_is_refused_naming_the_field(tmp_path, tiny_base_dir):
    config = TrainConfig(stage="cam", steps=1, init=tiny_base_dir, image_encoder=str(tmp_path / "no-clip"))
    with pytest.raises(ConfigError) as err:
        TrainingRun(config)
    assert err.value.field == "image_encoder"


@pytest.mark.integration  # whole training runs (train_in_process: checkpoints, export)
def test_an_apm_lr_moves_apm_at_its_own_rate_and_the_rest_at_lr(tmp_path, tiny_cam_dir):
    """--apm-lr: APM's parameters (alpha_l, resampler, mixer) are one optimiser group at apm_lr,
    the rest of stage 2's at lr. Adam's first step moves each parameter by about its group's lr
    (m / sqrt(v) = sign(g)), so the zero-initialised gates open 100x faster here. A checkpoint
    saved with one grouping is not resumed with the other."""
    from models.streaming_t2v import StreamingT2V

    common = dict(stage="cam_apm", steps=1, init=tiny_cam_dir, batch_size=2, fps=10, lr=1e-4, checkpoint_every=1,
                  dropout=Dropout(0.0, 0.0, 0.0))
    lines = []
    run = train_in_process(TrainConfig(**common, beyond=BeyondPaper(apm_lr=1e-2)), tmp_path / "run",
                           out=tmp_path / "model",
                           log=lines.append)
    start = StreamingT2V.from_pretrained(tiny_cam_dir, torch_dtype=torch.float32).unet.state_dict()
    apm = {id(p) for p in run.model.unet.apm_parameters()}
    names = {id(p): n for n, p in run.model.unet.named_parameters()}
    moved = {names[id(p)]: float((p.detach() - start[names[id(p)]]).abs().max()) for p in run.params}
    alphas = [n for n in moved if n.endswith(".alpha")]
    assert alphas and all(abs(moved[n] - 1e-2) < 1e-3 for n in alphas), {n: moved[n] for n in alphas}
    assert max(moved[names[id(p)]] for p in run.params if id(p) not in apm) <= 1e-4 * 1.001
    assert all(abs(group["lr"] - lr) < 1e-12 for group, lr in zip(run.optimizer.param_groups, (1e-4, 1e-2)))
    # the gates as SiLU(alpha_l) (Eq. 6): in the log line, the reported metrics and training.json
    gates = run.apm_gates()
    assert len(gates) == len(alphas) and all(abs(abs(g) - 0.5 * 1e-2) < 1e-3 for g in gates)
    assert run.metrics(0.5) == {"loss": 0.5, "step": 1, "apm_gate": max(map(abs, gates))}
    assert "apm gates" in lines[-1]
    assert json.loads((tmp_path / "model" / "training.json").read_text())["apm_gates"] == gates

    with pytest.raises(ConfigError) as err:  # the same run directory without --apm-lr
        TrainingRun(TrainConfig(**common)).load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert err.value.field == "apm_lr"


@pytest.mark.integration  # whole training runs (train_in_process: checkpoints, export)
def test_stage_1_continues_a_cam_model_and_can_start_training_its_main_branch(tmp_path, tiny_base_dir):
    """A stage-1 run exported and continued from its export (``--init`` a CAM model) keeps its
    CAM, and may switch ``main_branch``; a checkpoint of the other parameter set is refused,
    naming the field."""
    from models.streaming_t2v import StreamingT2V

    common = dict(stage="cam", steps=1, batch_size=1, fps=10, lr=1e-3, checkpoint_every=1)
    first = train_in_process(TrainConfig(**common, init=tiny_base_dir), tmp_path / "run1", out=tmp_path / "cam",
                             log=lambda *_: None)
    assert first.model.unet.cam.mergers[0].proj_out.weight.abs().sum() > 0  # trained off its zero init
    exported = StreamingT2V.from_pretrained(tmp_path / "cam", torch_dtype=torch.float32).unet.state_dict()

    config = TrainConfig(**common, init=str(tmp_path / "cam"), beyond=BeyondPaper(main_branch="all",
                                                                                  control_text="empty"))
    run = TrainingRun(config)
    state = run.model.unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in exported.items())  # the CAM it continues, not a fresh one
    assert run.model.unet.cam.config.control_text == "empty"
    assert {id(p) for p in run.model.unet.unet.parameters()} & {id(p) for p in run.params}
    train_in_process(config, tmp_path / "run2", out=tmp_path / "cam-all", log=lambda *_: None)
    saved = StreamingT2V.from_pretrained(tmp_path / "cam-all")
    assert saved.unet.cam.config.control_text == "empty"
    assert not torch.equal(saved.unet.unet.conv_in.weight, exported["unet.conv_in.weight"].to(saved.dtype))
    frozen = TrainingRun(TrainConfig(**common, init=str(tmp_path / "cam")))  # the same init, CAM only
    with pytest.raises(ConfigError) as err:
        frozen.load_checkpoint(latest_checkpoint(tmp_path / "run2"))
    assert err.value.field == "checkpoint" and "main_branch" in str(err.value)


def test_stage_1_from_the_conc_cond_baseline_is_refused(tiny_conc_cond_dir):
    with pytest.raises(ConfigError) as err:
        TrainingRun(TrainConfig(stage="cam", steps=1, init=tiny_conc_cond_dir))
    assert err.value.field == "init"


@pytest.mark.integration  # whole training runs (train_in_process: checkpoints, export)
def test_stage_conc_cond_continues_a_conc_cond_model(tmp_path, tiny_base_dir):
    """``--init`` a Conc-Cond model continues its UNet (the baseline's share of a continued
    budget), rather than building a fresh baseline from it; a CAM model is refused, naming the
    field."""
    from models.streaming_t2v import StreamingT2V

    common = dict(stage="conc_cond", steps=1, batch_size=1, fps=10, lr=1e-3, checkpoint_every=1)
    train_in_process(TrainConfig(**common, init=tiny_base_dir), tmp_path / "run1", out=tmp_path / "cc",
                     log=lambda *_: None)
    exported = StreamingT2V.from_pretrained(tmp_path / "cc", torch_dtype=torch.float32).unet.state_dict()
    fresh = build_model(TrainConfig(**common, init=tiny_base_dir)).unet.state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in exported.items())  # the first run trained it

    config = TrainConfig(**common, init=str(tmp_path / "cc"))
    state = TrainingRun(config).model.unet.state_dict()
    assert state.keys() == exported.keys()
    assert all(torch.equal(state[k], v) for k, v in exported.items())  # the baseline it continues
    train_in_process(config, tmp_path / "run2", out=tmp_path / "cc2", log=lambda *_: None)
    continued = StreamingT2V.from_pretrained(tmp_path / "cc2", torch_dtype=torch.float32).unet.state_dict()
    assert any(not torch.equal(continued[k], v) for k, v in exported.items())

    train_in_process(TrainConfig(stage="cam", steps=1, batch_size=1, fps=10, init=tiny_base_dir),
                     tmp_path / "run3", out=tmp_path / "cam", log=lambda *_: None)
    with pytest.raises(ConfigError) as err:
        TrainingRun(TrainConfig(**common, init=str(tmp_path / "cam")))
    assert err.value.field == "init"
    with pytest.raises(ConfigError) as err:
        TrainingRun(TrainConfig(**common, init=str(tmp_path / "cc"), cond_frames=4))
    assert err.value.field == "cond_frames"

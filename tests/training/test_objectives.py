"""Training stages (paper Sec. 5.1): only the intended parameters move, the loss goes down,
condition dropout has the stated rates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.data import local_batches
from training.objectives import Dropout, degrade_condition, draw_noise, sample_timesteps
from training.run import BeyondPaper, TrainConfig, TrainingRun


def _snapshot(run: TrainingRun) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().clone() for prefix, m in run.objective.modules().items()
            for k, v in m.state_dict().items()}


def _changed_by_two_steps(config: TrainConfig) -> tuple[dict[str, torch.Tensor], set[str]]:
    """The tensors before two training steps, and the names of those the steps changed."""
    run = TrainingRun(config)
    before = _snapshot(run)
    batches = local_batches(run.source(), config.batch_size)
    for _ in range(2):
        run.train_step(*next(batches))
    after = _snapshot(run)
    return before, {k for k in before if not torch.equal(before[k], after[k])}


def _main_temporal(name: str) -> bool:
    return name.startswith("unet.unet.") and any(t in name for t in (".temp_convs.", ".temp_attentions.",
                                                                     "unet.unet.transformer_in."))


# Which saved tensors each stage may change (by name), beside which all must stay bit-identical.
TRAINABLE = {
    "vae": lambda n: n.startswith("vae."),
    "base": lambda n: n.startswith("unet.") or n.startswith("text_encoder."),
    "cam": lambda n: n.startswith("unet.cam."),
    "cam_apm": lambda n: n.startswith("unet.") and not _main_temporal(n),
    "conc_cond": lambda n: n.startswith("unet."),
    "refiner": lambda n: n.startswith("unet."),
    "clip": lambda n: n.startswith("clip."),
}


@pytest.mark.parametrize("stage", ["vae", "base", "cam", "cam_apm", "conc_cond", "refiner", "clip"])
def test_only_the_stage_parameters_change(stage, init_dirs):
    batch_size = 1 if stage == "refiner" else 2  # the refiner's canvas-sized clips: one shows what moves
    config = TrainConfig(stage=stage, steps=2, init=init_dirs[stage], batch_size=batch_size, fps=10, lr=1e-3,
                         dropout=Dropout(0.3, 0.3, 0.3), beyond=BeyondPaper(train_text_encoder=stage == "base"))
    before, changed = _changed_by_two_steps(config)
    may_change = {k for k in before if TRAINABLE[stage](k)}
    assert changed <= may_change, sorted(changed - may_change)[:5]
    assert changed, "nothing was trained"
    if stage == "cam_apm":  # the frozen main temporal layers and the trained APM alpha_l
        assert any(_main_temporal(k) for k in before) and not any(_main_temporal(k) for k in changed)
        assert any(".alpha" in k for k in changed) and any(k.startswith("unet.cam.") for k in changed)
    if stage == "cam":  # every zero-initialised P_out moved off zero
        assert all(k in changed for k in before if k.startswith("unet.cam.mergers.") and "proj_out" in k)


def _apm(name: str) -> bool:
    return name.startswith("unet.apm.") or ".processor." in name  # resampler, mixer; alpha_l


@pytest.mark.parametrize("main_branch", ["spatial", "all"])
def test_a_stage_1_that_trains_the_main_branch_moves_exactly_those_layers(main_branch, init_dirs):
    """--main-branch: CAM plus the main branch's spatial layers (stage 2's set) or all of it
    (Conc-Cond's); APM, which stage 1 gives no anchor, stays as initialised, and with 'spatial'
    the temporal layers stay bit-identical."""
    config = TrainConfig(stage="cam", steps=2, init=init_dirs["cam"], batch_size=1, fps=10, lr=1e-3,
                         beyond=BeyondPaper(main_branch=main_branch))
    _, changed = _changed_by_two_steps(config)
    assert not any(_apm(k) for k in changed), sorted(k for k in changed if _apm(k))[:5]
    assert not any(k.startswith(("vae.", "text_encoder.", "image_encoder.")) for k in changed)
    assert any(k.startswith("unet.cam.") for k in changed)
    spatial = {k for k in changed if k.startswith("unet.unet.") and not _main_temporal(k)}
    temporal = {k for k in changed if _main_temporal(k)}
    assert spatial and any("attn2" in k for k in spatial)  # e.g. the text cross-attention
    assert bool(temporal) == (main_branch == "all"), sorted(temporal)[:5]


def test_an_apm_only_stage_2_moves_apm_and_nothing_else(init_dirs):
    """--apm-only: stage 2 trains APM's gates alpha_l, resampler and mixer, and every other
    tensor (CAM, the main branch's spatial layers included) stays bit-identical."""
    config = TrainConfig(stage="cam_apm", steps=2, init=init_dirs["cam_apm"], batch_size=2, fps=10, lr=1e-3,
                         dropout=Dropout(0.3, 0.3, 0.3), beyond=BeyondPaper(apm_only=True))
    _, changed = _changed_by_two_steps(config)
    assert changed and all(_apm(k) for k in changed), sorted(k for k in changed if not _apm(k))[:5]
    assert any(".alpha" in k for k in changed) and any(k.startswith("unet.apm.") for k in changed)


@pytest.mark.parametrize("stage, steps, batch_size", [("base", 4, 1), ("cam", 10, 1),
                                                     ("clip", 10, 2)])  # CLIP's contrastive loss needs a pair
def test_training_lowers_the_loss_on_a_fixed_batch(stage, steps, batch_size, init_dirs):
    torch.manual_seed(0)
    config = TrainConfig(stage=stage, steps=steps, init=init_dirs[stage], batch_size=batch_size, fps=10, lr=2e-3)
    run = TrainingRun(config)
    frames, captions = next(local_batches(run.source(), config.batch_size))
    before = run.eval_loss(frames, captions)
    for _ in range(config.steps):
        run.train_step(frames, captions)
    after = run.eval_loss(frames, captions)
    assert after < 0.95 * before, (before, after)


def test_condition_dropout_rates_and_disjointness():
    g = torch.Generator().manual_seed(0)
    n = 40000
    text, anchor = Dropout().draw(n, g)
    rates = {"text_only": (text & ~anchor).float().mean().item(), "anchor_only": (anchor & ~text).float().mean().item(),
             "both": (text & anchor).float().mean().item()}
    sigma = np.sqrt(0.05 * 0.95 / n)
    for name, rate in rates.items():
        assert abs(rate - 0.05) < 4 * sigma, (name, rate)


def test_uniform_timesteps_cover_the_schedule_evenly():
    """The paper's t ~ U{0..T-1}, drawn exactly as before the option existed (runs resume)."""
    t = sample_timesteps(40000, 1000, "uniform", torch.Generator().manual_seed(0))
    assert torch.equal(t, torch.randint(0, 1000, (40000,), generator=torch.Generator().manual_seed(0)))
    assert t.min() >= 0 and t.max() <= 999
    assert abs((t >= 500).float().mean().item() - 0.5) < 0.01


def test_cubic_timesteps_favour_high_noise_as_t2i_adapter():
    """t = floor((1 - u^3) T): P(t < s) = P(u > (1 - s/T)^(1/3)) = 1 - (1 - s/T)^(1/3)."""
    t = sample_timesteps(40000, 1000, "cubic", torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= 999
    for s in (250, 500, 750):
        expected = 1 - (1 - s / 1000) ** (1 / 3)
        assert abs((t < s).float().mean().item() - expected) < 0.01, s
    again = sample_timesteps(40000, 1000, "cubic", torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


def test_the_noise_draw_reaches_the_loss():
    """A run with cubic sampling draws other timesteps than a uniform one from the same seed, and
    one with offset noise other noise, so its loss on the same batch differs."""
    frames = torch.rand(2, 3, 16, 64, 64) * 2 - 1
    captions = ["a red circle moving left on a striped background"] * 2
    losses = {}
    for sampling in ("uniform", "cubic"):
        run = TrainingRun(TrainConfig(stage="base", steps=1, batch_size=2,
                                      beyond=BeyondPaper(timestep_sampling=sampling)))
        losses[sampling] = run.eval_loss(frames, captions, seed=3)
    assert losses["uniform"] != losses["cubic"]
    offset = TrainingRun(TrainConfig(stage="base", steps=1, batch_size=2, beyond=BeyondPaper(offset_noise=0.1)))
    assert offset.eval_loss(frames, captions, seed=3) != losses["uniform"]


def test_no_offset_noise_draws_exactly_the_papers_white_noise():
    """offset_noise = 0 draws nothing more: runs started before the option resume bit for bit."""
    eps = draw_noise(torch.Size((2, 4, 16, 8, 8)), 0.0, torch.Generator().manual_seed(5))
    assert torch.equal(eps, torch.randn(2, 4, 16, 8, 8, generator=torch.Generator().manual_seed(5)))


def test_offset_noise_is_one_offset_per_video_and_channel():
    """eps = white + s * N(0, 1) per (video, channel): the spread of the per-(video, channel) mean
    is s (plus white noise's 1/sqrt(F*h*w)), the deviations from it are still white."""
    s = 0.3
    eps = draw_noise(torch.Size((400, 4, 16, 8, 8)), s, torch.Generator().manual_seed(0))
    means = eps.mean(dim=(2, 3, 4))
    assert abs(means.std().item() - (s**2 + 1 / 1024) ** 0.5) < 0.02
    assert abs((eps - means[..., None, None, None]).std().item() - 1.0) < 0.01


def test_offset_noise_hides_the_mean_colour_the_schedule_leaks():
    """The schedule of Table 12 keeps sqrt(abar_T) ~ 0.07 of x_0 at the last training step. For a
    16-frame 32x32 chunk, white noise averages out over the 16384 positions, so x_t's
    per-channel mean still tells the clip's mean colour (what CAM should carry instead); the
    offset hides it."""
    from models.schedule import NoiseSchedule

    g = torch.Generator().manual_seed(0)
    latents = 0.3 * torch.randn(256, 4, 1, 1, 1, generator=g) + torch.randn(256, 4, 16, 32, 32, generator=g)
    schedule = NoiseSchedule()
    last = schedule.num_train_timesteps - 1
    truth = latents.mean(dim=(2, 3, 4)).flatten()

    def correlation(offset: float) -> float:
        eps = draw_noise(latents.shape, offset, torch.Generator().manual_seed(1))
        noisy = schedule.make_scheduler().add_noise(latents, eps, torch.full((256,), last))
        return float(torch.corrcoef(torch.stack([noisy.mean(dim=(2, 3, 4)).flatten(), truth]))[0, 1])

    assert correlation(0.0) > 0.9
    assert correlation(0.1) < 0.4


def test_cam_apm_clips_are_two_chunks_long():
    assert TrainConfig(stage="cam_apm", steps=1, init="x").clip_spec().num_frames == 32
    assert TrainConfig(stage="cam", steps=1, init="x").clip_spec().num_frames == 16


def test_refiner_clips_have_the_refinement_geometry():
    from models.presets import REFINE_GEOMETRY

    spec = TrainConfig(stage="refiner", steps=1, init="x").clip_spec()
    geometry = REFINE_GEOMETRY["tiny"]
    assert (spec.num_frames, spec.height, spec.width) == (24, geometry["canvas_height"], geometry["canvas_width"])


@pytest.mark.parametrize("kwargs,field", [
    (dict(stage="warp", steps=1), "stage"), (dict(stage="cam", steps=1), "init"),
    (dict(stage="base", steps=0), "steps"), (dict(stage="base", steps=1, lr=-1.0), "lr"),
    (dict(stage="base", steps=1, mixed_precision="fp8"), "mixed_precision"),
    (dict(stage="cam", steps=1, init="x", train_text_encoder=True), "train_text_encoder"),
    (dict(stage="base", steps=1, timestep_sampling="logit-normal"), "timestep_sampling"),
    (dict(stage="base", steps=1, offset_noise=-0.1), "offset_noise"),
    (dict(stage="base", steps=1, offset_noise=float("nan")), "offset_noise"),
    (dict(stage="base", steps=1, tokenizer="toyworld"), "tokenizer"),  # only with a trained text encoder
    (dict(stage="base", steps=1, train_text_encoder=True, tokenizer="words"), "tokenizer"),
    (dict(stage="base", steps=1, decoded_condition=True), "decoded_condition"),  # no chunk condition
    (dict(stage="cam", steps=1, init="x", control_text="none"), "control_text"),
    (dict(stage="cam_apm", steps=1, init="x", control_text="empty"), "control_text"),  # inherits its init's
    (dict(stage="base", steps=1, image_encoder="clip-dir"), "image_encoder"),  # no anchor model
    (dict(stage="cam_apm", steps=1, init="x", condition_noise=0.5), "condition_noise"),  # not decoded
    (dict(stage="cam", steps=1, init="x", apm_lr=1e-3), "apm_lr"),  # stage 1 does not train APM
    (dict(stage="cam_apm", steps=1, init="x", apm_lr=0.0), "apm_lr"),
    (dict(stage="cam", steps=1, init="x", main_branch="temporal"), "main_branch"),
    (dict(stage="cam_apm", steps=1, init="x", main_branch="all"), "main_branch"),  # stage 2's set is fixed
    (dict(stage="conc_cond", steps=1, init="x", main_branch="spatial"), "main_branch"),
    (dict(stage="cam_apm", steps=1, init="x", decoded_condition=True, condition_noise=1.5), "condition_noise"),
    (dict(stage="cam", steps=1, init="x", apm_only=True), "apm_only"),  # stage 1 gives APM no anchor
    (dict(stage="cam_apm", steps=1, init="x", apm_only=True, apm_lr=1e-3), "apm_lr"),  # APM is all; use lr
    (dict(stage="cam", steps=1, init="x", decoded_condition=True, condition_noise=float("nan")), "condition_noise"),
    (dict(stage="base", steps=1, upscaled_input=True), "upscaled_input"),  # the refiner's input only
])
def test_bad_config_names_the_field(kwargs, field):
    from models.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("stage", ["cam", "conc_cond"])
def test_a_decoded_condition_is_what_sampling_gives_the_model(stage, init_dirs):
    """--decoded-condition: CAM is conditioned on frames decoded from the clip's latents, and
    Conc-Cond on those frames re-encoded, as sampling conditions a chunk on the previous chunk's
    decoded frames (StreamingT2V.condition); the default is the clip's own frames (latents)."""
    frames = torch.rand(1, 3, 16, 64, 64) * 2 - 1
    captions = ["a red circle moving left on a striped background"]
    plain = TrainingRun(TrainConfig(stage=stage, steps=1, init=init_dirs[stage], batch_size=1))
    decoded = TrainingRun(TrainConfig(stage=stage, steps=1, init=init_dirs[stage], batch_size=1,
                                      beyond=BeyondPaper(decoded_condition=True)))
    m = decoded.model
    latents = m.encode(frames)
    k = m.cond_frames
    sampled = m.decode(latents[:, :, :k])  # what a previous chunk with these latents hands on
    expected = m.encode(sampled) if stage == "conc_cond" else sampled
    assert torch.equal(decoded.objective.condition(frames, latents), expected)
    own = latents[:, :, :k] if stage == "conc_cond" else frames[:, :, :k]
    assert torch.equal(plain.objective.condition(frames, latents), own)
    for _ in range(2):  # the same steps but for the condition: other weights (CAM's zero-initialised
        plain.train_step(frames, captions)  # ends keep the condition out of the first step)
        decoded.train_step(frames, captions)
    a, b = plain.trainable_state(), decoded.trainable_state()
    assert any(not torch.equal(a[name], b[name]) for name in a)


def test_a_degraded_condition_adds_one_noise_level_per_clip():
    """degrade_condition: z + s * N(0, I) with s ~ U(0, smax) drawn once per clip, so each clip's
    residual is white with its own std, and the stds spread over [0, smax]."""
    z = torch.randn(300, 4, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    degraded = degrade_condition(z, 0.8, torch.Generator().manual_seed(1))
    stds = (degraded - z).flatten(1).std(dim=1)
    assert stds.min() >= 0 and stds.max() <= 0.8 * 1.1
    assert abs(stds.mean().item() - 0.4) < 0.05  # the mean of U(0, 0.8)
    per_frame = (degraded - z).std(dim=(1, 3, 4))  # the same level in every frame of a clip
    assert torch.allclose(per_frame, stds[:, None].expand_as(per_frame), rtol=0.25, atol=0.02)


@pytest.mark.parametrize("stage", ["cam_apm", "conc_cond"])
def test_condition_noise_degrades_the_condition_not_the_target(stage, init_dirs):
    """--condition-noise: the condition is decoded (Conc-Cond: re-encoded) from the degraded
    latents, drawn from the step's generator right after the training noise; the loss's target
    (the noise added to the clip's own latents) is the same as without the option, and with 0
    nothing more is drawn, so runs without it continue bit for bit."""
    from models.schedule import NoiseSchedule
    from training.objectives import noise_and_target

    frames = torch.rand(1, 3, 32 if stage == "cam_apm" else 16, 64, 64) * 2 - 1
    base = dict(stage=stage, steps=1, init=init_dirs[stage], batch_size=1)
    plain = TrainingRun(TrainConfig(**base, beyond=BeyondPaper(decoded_condition=True)))
    noisy = TrainingRun(TrainConfig(**base, beyond=BeyondPaper(decoded_condition=True, condition_noise=0.7)))
    m = noisy.model
    chunk = frames[:, :, 16:] if stage == "cam_apm" else frames
    latents = m.encode(chunk)
    k = m.cond_frames
    g = torch.Generator().manual_seed(4)
    expected = m.decode(degrade_condition(latents[:, :, :k], 0.7, g))
    expected = m.encode(expected) if stage == "conc_cond" else expected
    got = noisy.objective.condition(chunk, latents, torch.Generator().manual_seed(4))
    assert torch.equal(got, expected)
    assert not torch.equal(got, plain.objective.condition(chunk, latents))
    g = torch.Generator().manual_seed(4)
    plain.objective.condition(chunk, latents, g)  # condition_noise = 0 draws nothing
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(4).get_state())
    # the target: both objectives draw t and eps first, from the same stream
    a, b = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    schedule = NoiseSchedule()
    assert all(torch.equal(x, y) for x, y in zip(noise_and_target(schedule, latents, a),
                                                 noise_and_target(schedule, latents, b)))
    captions = ["a red circle moving left on a striped background"]
    for _ in range(2):  # the loss reads the degraded condition (CAM's zero-initialised ends keep
        plain.train_step(frames, captions)  # any condition out of the first step)
        noisy.train_step(frames, captions)
    a, b = plain.trainable_state(), noisy.trainable_state()
    assert any(not torch.equal(a[name], b[name]) for name in a)


def test_the_upscaled_input_refiner_trains_on_what_refinement_gives_it(init_dirs):
    """--upscaled-input: the refiner's input is the clip reduced to the low-res size, decoded
    from its latents and put on the canvas by models.refinement.to_canvas (as refinement puts the
    low-res video), noised up to T' = 600; its loss is finite and trains the UNet."""
    from models.presets import REFINE_GEOMETRY
    from models.refinement import RefineConfig, to_canvas

    config = TrainConfig(stage="refiner", steps=1, init=init_dirs["refiner"], batch_size=1,
                         beyond=BeyondPaper(upscaled_input=True))
    run = TrainingRun(config)
    spec = config.clip_spec()
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(1, 3, spec.num_frames, spec.height, spec.width, generator=g) * 2 - 1
    m, objective = run.model, run.objective
    refine = RefineConfig(**REFINE_GEOMETRY["tiny"])
    assert objective.noise_level == refine.noise_level == 600
    small = torch.nn.functional.interpolate(frames[0].transpose(0, 1), size=(64, 64), mode="area").transpose(0, 1)[None]
    expected = to_canvas(m.decode(m.encode(small)), refine)
    got = objective.upscaled(frames)
    assert got.shape == frames.shape and torch.allclose(got, expected, atol=1e-6)
    losses = [objective.loss(frames, ["a red circle moving left"], torch.Generator().manual_seed(s)).item()
              for s in range(2)]
    assert all(np.isfinite(losses))
    run.train_step(frames, ["a red circle moving left"])  # the UNet trains (stage refiner moves unet only)

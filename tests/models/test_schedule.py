"""The noise schedule (Table 12) and DDIM sampler settings."""

from __future__ import annotations

import torch

from models.schedule import VIDEO_LDM_SCHEDULE, NoiseSchedule


def test_default_schedule_is_the_video_ldm_training_schedule():
    s = VIDEO_LDM_SCHEDULE
    assert (s.num_train_timesteps, s.prediction_type, s.num_inference_steps, s.eta) == (1000, "epsilon", 50, 1.0)
    scheduler = s.make_scheduler()
    # ModelScope's linear_sd / diffusers' scaled_linear: sqrt(beta) linear from sqrt(0.00085) to sqrt(0.012).
    betas = scheduler.betas.double()
    assert abs(betas[0].item() - 0.00085) < 1e-9 and abs(betas[-1].item() - 0.012) < 1e-9
    root = betas.sqrt()
    torch.testing.assert_close(root[1:] - root[:-1], torch.full((999,), (root[-1] - root[0]).item() / 999,
                                                                 dtype=torch.float64), rtol=1e-3, atol=1e-7)
    scheduler.set_timesteps(50)
    assert len(scheduler.timesteps) == 50 and scheduler.timesteps[0] == 981 and scheduler.timesteps[-1] == 1


def test_table12_literal_reading_is_available_for_ablation():
    s = NoiseSchedule.table12_literal()
    betas = s.make_scheduler().betas.double()
    assert (s.beta_schedule, s.beta_start, s.beta_end) == ("linear", 0.0085, 0.012)
    assert abs(betas[0].item() - 0.0085) < 1e-9 and abs((betas[1] - betas[0]).item() - 0.0035 / 999) < 1e-9


def test_schedule_reports_disagreeing_scheduler_configs():
    assert VIDEO_LDM_SCHEDULE.differs_from({"beta_start": 0.00085, "beta_schedule": "scaled_linear"}) == []
    assert VIDEO_LDM_SCHEDULE.differs_from({"beta_schedule": "linear"}) == ["beta_schedule"]


def test_default_scheduler_config_is_unchanged_by_the_logsnr_schedule():
    from diffusers import DDIMScheduler

    before = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                           timestep_spacing="leading")
    after = VIDEO_LDM_SCHEDULE.make_scheduler()
    assert after.config == before.config and torch.equal(after.alphas_cumprod, before.alphas_cumprod)


def _vid2vid_alpha_bar(t: int, n: int = 1000) -> float:
    """alpha_bar_t of the logsnr_cosine_interp schedule, one t at a time from its definition."""
    import math

    def sigma(k: int) -> float:
        u = 1 - k / (n - 1)
        a, b = math.atan(math.exp(7.5)), math.atan(math.exp(-7.5))
        cosine = -2 * math.log(math.tan(a + u * (b - a)))
        logsnr = u * (cosine + 2 * math.log(1 / 2)) + (1 - u) * (cosine + 2 * math.log(1 / 4))
        return math.sqrt(1 / (1 + math.exp(logsnr)))

    lo, hi = sigma(0), sigma(n - 1)  # sigma grows with t
    return 1 - (lo + (1 - lo) / (hi - lo) * (sigma(t) - lo)) ** 2


def test_vid2vid_xl_schedule_is_logsnr_cosine_interp_with_zero_terminal_snr():
    from models.errors import ConfigError
    from models.schedule import VID2VID_XL_SCHEDULE

    s = VID2VID_XL_SCHEDULE
    assert (s.beta_schedule, s.prediction_type) == ("logsnr_cosine_interp", "v_prediction")
    scheduler = s.make_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod.double()
    assert alphas_cumprod[-1] == 0 and scheduler.betas[-1] == 1
    assert bool((alphas_cumprod[1:] < alphas_cumprod[:-1]).all())
    for t in (0, 1, 300, 600, 998):
        assert abs(alphas_cumprod[t].item() - _vid2vid_alpha_bar(t)) < 1e-6, t
    # The scheduler config a converted refiner saves reads back as the same schedule.
    assert NoiseSchedule.from_scheduler_config(dict(scheduler.config)) == s
    assert s.differs_from(dict(scheduler.config)) == []
    try:
        NoiseSchedule(beta_schedule="cosine")
    except ConfigError as exc:
        assert "logsnr_cosine_interp" in str(exc)
    else:
        raise AssertionError("an unknown beta_schedule must be refused")

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

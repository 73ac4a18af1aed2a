"""The one noise schedule of the Video-LDM (paper Table 12) and the DDIM sampler built on it.

Table 12 prints "linear, beta_0 = 0.0085, beta_T = 0.0120". The ModelScope weights the paper
builds on were trained with ModelScope's ``linear_sd`` schedule, i.e. betas linear in
sqrt-space ("scaled_linear" in diffusers) from 0.00085 to 0.0120, and the authors sample with
that scheduler config. A sampler must use the schedule its model was trained with, so
:data:`VIDEO_LDM_SCHEDULE` is that reading; :meth:`NoiseSchedule.table12_literal` gives the
numbers exactly as printed, for ablation only.

The refiner MS-Vid2Vid-XL was trained with ModelScope's ``logsnr_cosine_interp`` schedule
(:data:`VID2VID_XL_SCHEDULE`, v-prediction): log-SNR cosine schedules shifted by 2 log(1/s),
interpolated from s = 2 at t = 0 to s = 4 at t = T, rescaled to zero terminal SNR
(:func:`logsnr_cosine_interp_alphas_cumprod`); its betas go to DDIM as ``trained_betas``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, get_args

import torch
from diffusers import DDIMScheduler

from models.errors import require

BetaSchedule = Literal["linear", "scaled_linear", "logsnr_cosine_interp"]
BETA_SCHEDULES: tuple[str, ...] = get_args(BetaSchedule)
LOGSNR_RANGE = (-15.0, 15.0)  # logsnr_min, logsnr_max of ModelScope's cosine schedule
LOGSNR_SHIFTS = (2.0, 4.0)  # scale_min at t = 0, scale_max at t = T, as MS-Vid2Vid-XL samples


def logsnr_cosine_interp_alphas_cumprod(n: int) -> torch.Tensor:
    """alpha_bar_t (float64, t = 0..n-1) of ModelScope's ``noise_schedule('logsnr_cosine_interp',
    zero_terminal_snr=True, scale_min=2, scale_max=4)``.

    With u = 1 - t / (n - 1): logsnr_s(u) = -2 log tan(a + u (b - a)) + 2 log(1 / s),
    a = atan(exp(-logsnr_min / 2)), b = atan(exp(-logsnr_max / 2));
    logsnr(u) = u logsnr_2(u) + (1 - u) logsnr_4(u); sigma = sqrt(sigmoid(-logsnr)), stretched
    linearly so that sigma_max = 1 (zero terminal SNR); alpha_bar = 1 - sigma^2."""
    lo, hi = LOGSNR_RANGE
    a, b = math.atan(math.exp(-0.5 * lo)), math.atan(math.exp(-0.5 * hi))
    u = torch.linspace(1, 0, n, dtype=torch.float64)
    cosine = -2 * torch.log(torch.tan(a + u * (b - a)))
    s_min, s_max = LOGSNR_SHIFTS
    logsnr = u * (cosine + 2 * math.log(1 / s_min)) + (1 - u) * (cosine + 2 * math.log(1 / s_max))
    sigma = torch.sqrt(torch.sigmoid(-logsnr))
    sigma = sigma.min() + (1 - sigma.min()) / (sigma.max() - sigma.min()) * (sigma - sigma.min())
    return 1 - sigma**2


def betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} (beta_0 = 1 - alpha_bar_0); a zero terminal
    alpha_bar gives beta_T = 1."""
    return 1 - torch.cat([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])


@dataclass(frozen=True)
class NoiseSchedule:
    """Forward-process schedule plus the DDIM sampler settings of the paper. ``beta_start`` and
    ``beta_end`` apply to the linear schedules; ``logsnr_cosine_interp`` has no free numbers."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: BetaSchedule = "scaled_linear"
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    num_inference_steps: int = 50
    eta: float = 1.0

    def __post_init__(self) -> None:
        require(self.num_train_timesteps >= 1, "num_train_timesteps", self.num_train_timesteps, ">= 1")
        require(0 < self.beta_start < self.beta_end < 1, "beta_start/beta_end",
                (self.beta_start, self.beta_end), "0 < beta_start < beta_end < 1")
        require(self.beta_schedule in BETA_SCHEDULES, "beta_schedule", self.beta_schedule,
                "one of " + ", ".join(map(repr, BETA_SCHEDULES)))
        require(self.prediction_type in ("epsilon", "v_prediction"), "prediction_type",
                self.prediction_type, "one of 'epsilon', 'v_prediction'")
        require(1 <= self.num_inference_steps <= self.num_train_timesteps, "num_inference_steps",
                self.num_inference_steps, f"an integer in [1, {self.num_train_timesteps}]")
        require(math.isfinite(self.eta) and 0.0 <= self.eta <= 1.0, "eta", self.eta, "a number in [0, 1]")

    @classmethod
    def table12_literal(cls) -> "NoiseSchedule":
        """Table 12's numbers taken literally (linear betas 0.0085 -> 0.012)."""
        return cls(beta_start=0.0085, beta_end=0.012, beta_schedule="linear")

    @classmethod
    def from_scheduler_config(cls, config: dict) -> "NoiseSchedule":
        """The forward process of a diffusers scheduler config, sampled with DDIM."""
        fields = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
        return cls(**{f: config[f] for f in fields if f in config})

    def with_steps(self, num_inference_steps: int) -> "NoiseSchedule":
        return NoiseSchedule(**{**asdict(self), "num_inference_steps": num_inference_steps})

    def make_scheduler(self) -> DDIMScheduler:
        """A fresh DDIM scheduler (stateful in diffusers, so one per sampling loop)."""
        kwargs = {}
        if self.beta_schedule == "logsnr_cosine_interp":
            kwargs["trained_betas"] = betas_from_alphas_cumprod(
                logsnr_cosine_interp_alphas_cumprod(self.num_train_timesteps)).tolist()
        return DDIMScheduler(
            num_train_timesteps=self.num_train_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            beta_schedule=self.beta_schedule,
            prediction_type=self.prediction_type,
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            timestep_spacing="leading",
            **kwargs,
        )

    def differs_from(self, scheduler_config: dict) -> list[str]:
        """Names of the schedule fields on which a loaded scheduler config disagrees with us."""
        fields = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
        return [f for f in fields if f in scheduler_config and scheduler_config[f] != getattr(self, f)]


VIDEO_LDM_SCHEDULE = NoiseSchedule()

VID2VID_XL_SCHEDULE = NoiseSchedule(beta_schedule="logsnr_cosine_interp", prediction_type="v_prediction")
"""The refiner MS-Vid2Vid-XL's training schedule (v-prediction, zero terminal SNR)."""

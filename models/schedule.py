"""The one noise schedule of the Video-LDM (paper Table 12) and the DDIM sampler built on it.

Table 12 prints "linear, beta_0 = 0.0085, beta_T = 0.0120". The ModelScope weights the paper
builds on were trained with ModelScope's ``linear_sd`` schedule, i.e. betas linear in
sqrt-space ("scaled_linear" in diffusers) from 0.00085 to 0.0120, and the authors sample with
that scheduler config. A sampler must use the schedule its model was trained with, so
:data:`VIDEO_LDM_SCHEDULE` is that reading; :meth:`NoiseSchedule.table12_literal` gives the
numbers exactly as printed, for ablation only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from diffusers import DDIMScheduler

from models.errors import require

BetaSchedule = Literal["linear", "scaled_linear"]


@dataclass(frozen=True)
class NoiseSchedule:
    """Forward-process schedule plus the DDIM sampler settings of the paper."""

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
        require(self.beta_schedule in ("linear", "scaled_linear"), "beta_schedule",
                self.beta_schedule, "one of 'linear', 'scaled_linear'")
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
        )

    def differs_from(self, scheduler_config: dict) -> list[str]:
        """Names of the schedule fields on which a loaded scheduler config disagrees with us."""
        fields = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
        return [f for f in fields if f in scheduler_config and scheduler_config[f] != getattr(self, f)]


VIDEO_LDM_SCHEDULE = NoiseSchedule()

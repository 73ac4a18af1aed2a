"""Classifier-free guidance for the init chunk and multi-conditioned guidance (paper Eq. 13), and
guidance rescale for the refiner (Lin et al. 2023, as MS-Vid2Vid-XL samples)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.errors import require


@dataclass(frozen=True)
class GuidanceWeights:
    """omega_text and omega_anchor of Eq. 13 (paper: 7.5 each)."""

    text: float = 7.5
    anchor: float = 7.5

    def __post_init__(self) -> None:
        for name in ("text", "anchor"):
            value = getattr(self, name)
            require(isinstance(value, (int, float)) and math.isfinite(value) and value >= 0,
                    f"guidance.{name}", value, "a finite number >= 0")

    @property
    def anchor_branch_cancels(self) -> bool:
        """With omega_text == omega_anchor the eps(tau, a_null) terms of Eq. 13 cancel:
        eps_hat = eps(null, null) + w * (eps(tau, a) - eps(null, null)), so two UNet branches
        give the same prediction as three (this is the reference implementation's 2-way CFG)."""
        return self.text == self.anchor


def text_cfg(eps_null: torch.Tensor, eps_text: torch.Tensor, w_text: float, rescale: float = 0.0) -> torch.Tensor:
    """Classifier-free guidance on text alone (init chunk, no anchor yet; refinement).

    ``rescale`` = phi > 0 applies guidance rescale (Lin et al. 2023) as MS-Vid2Vid-XL's sampler
    does, on the model's own output (v for a v-prediction model) and per video of the batch:
    out = guided * (phi * std(text) / (std(guided) + 1e-12) + 1 - phi), std over all of a
    video's elements (unbiased, as ``torch.std``)."""
    guided = eps_null + w_text * (eps_text - eps_null)
    if rescale == 0.0:
        return guided
    shape = (-1,) + (1,) * (guided.ndim - 1)
    ratio = (eps_text.flatten(1).std(dim=1) / (guided.flatten(1).std(dim=1) + 1e-12)).view(shape)
    return guided * (rescale * ratio + (1 - rescale))


def multi_conditioned_cfg(eps_null: torch.Tensor, eps_text: torch.Tensor, eps_text_anchor: torch.Tensor,
                          weights: GuidanceWeights) -> torch.Tensor:
    """Eq. 13: eps(x,t,tau_null,a_null) + w_text (eps(x,t,tau,a_null) - eps(x,t,tau_null,a_null))
    + w_anchor (eps(x,t,tau,a) - eps(x,t,tau,a_null))."""
    return eps_null + weights.text * (eps_text - eps_null) + weights.anchor * (eps_text_anchor - eps_text)

"""One denoising step of each stage, timed and FLOP-counted, with each optimisation as a switch.

A step is the network work of one DDIM step at the stage's geometry (the scheduler update is
negligible): init-chunk and refine are the text-guided UNet (classifier-free guidance, 2
branches); autoregressive-extend is the UNet + CAM + APM under the multi-conditioned guidance of
Eq. 13. Inputs are random: compute does not depend on the values.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and
attention; the usual basis of model FLOP utilisation), on the run's device or, for shapes alone,
on the ``meta`` device.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.hardware import synchronize
from models.guidance import GuidanceWeights, multi_conditioned_cfg, text_cfg
from models.refinement import RefineConfig
from models.streaming_t2v import StreamingT2V
from models.video_ldm import VideoLDM

STAGES: tuple[str, ...] = ("init", "extend", "refine")


@dataclass(frozen=True)
class Switches:
    """The optimisations of the step, each measurable on its own (defaults: what the product runs)."""

    batched_guidance: bool = True  # the guidance branches in one UNet call (False: one call per branch)
    reuse_econd: bool = True  # CAM's E_cond once per chunk (False: at every call)
    sdpa: bool = True  # fused scaled-dot-product attention kernels (False: the math backend)
    channels_last: bool = False  # NHWC convolutions
    compile: bool = False  # torch.compile of the denoiser

    def label(self) -> str:
        changed = [f"{k}={v}" for k, v in asdict(self).items() if v != getattr(Switches(), k)]
        return ",".join(changed) or "default"


@dataclass(frozen=True)
class StepFigures:
    stage: str
    shape: tuple[int, ...]  # latent (b, c, F, h, w) of one branch
    branches: int
    seconds: float  # median over the timed repetitions
    flops: float  # per step
    repeats: int

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.seconds if self.seconds > 0 else float("nan")


def _latent(model, frames: int, height: int, width: int, batch: int = 1) -> torch.Tensor:
    c = model.vae.config.latent_channels
    f = model.vae_scale
    return torch.randn(batch, c, frames, height // f, width // f, device=model.device, dtype=model.dtype)


def _text(model, batch: int = 1) -> torch.Tensor:
    d = model.text_encoder.config.hidden_size
    return torch.randn(batch, 77, d, device=model.device, dtype=model.dtype)


def prepare(model: VideoLDM | StreamingT2V, switches: Switches) -> None:
    """Apply the model-level switches (memory format, compilation) in place."""
    if switches.channels_last:  # the 2D convolutions (frames folded into the batch); Conv3d stays
        for module in (*model.unet.modules(), *model.vae.modules()):
            if isinstance(module, torch.nn.Conv2d):
                module.to(memory_format=torch.channels_last)
    if switches.compile and not isinstance(model.unet, torch._dynamo.eval_frame.OptimizedModule):
        model.unet = torch.compile(model.unet)


def cfg_step(model: VideoLDM, frames: int, height: int, width: int, switches: Switches,
             guidance: float = 7.5) -> tuple[Callable[[], torch.Tensor], tuple[int, ...], int]:
    """Init-chunk / refine: eps_null + w (eps_text - eps_null) (classifier-free guidance)."""
    x = _latent(model, frames, height, width)
    text = torch.cat([_text(model), _text(model)])
    t = torch.tensor(500, device=model.device)

    def step() -> torch.Tensor:
        if switches.batched_guidance:
            eps_null, eps_text = model.unet(torch.cat([x, x]), t, text).sample.chunk(2)
        else:
            eps_null, eps_text = (model.unet(x, t, text[i:i + 1]).sample for i in range(2))
        return text_cfg(eps_null, eps_text, guidance)

    return step, tuple(x.shape), 2


def extend_step(model: StreamingT2V, switches: Switches, weights: GuidanceWeights = GuidanceWeights()
                ) -> tuple[Callable[[], torch.Tensor], tuple[int, ...], int]:
    """Autoregressive-extend: Eq. 13 over (tau_null, a_null), (tau, a_null), (tau, a); two
    branches when omega_text == omega_anchor (the middle one cancels)."""
    if not switches.reuse_econd and not model.has_apm:  # Conc-Cond reads latents; nothing to reuse
        raise ValueError("reuse_econd=False applies to CAM models only")
    v = model.video
    x = _latent(model, v.frames_per_chunk, v.height, v.width)
    text_null, text = _text(model), _text(model)
    e = model.image_encoder.config.projection_dim
    anchor_null, anchor = (torch.randn(1, e, device=model.device, dtype=model.dtype) for _ in range(2))
    frames = torch.rand(1, 3, model.cond_frames, v.height, v.width, device=model.device, dtype=model.dtype) * 2 - 1
    t = torch.tensor(500, device=model.device)
    cond_once = model.condition(frames)
    branches = 2 if weights.anchor_branch_cancels else 3

    def step() -> torch.Tensor:
        cond = cond_once if switches.reuse_econd else frames
        if switches.batched_guidance:
            return model.guided_noise(x, t, text_null, text, anchor_null, anchor, cond, weights)
        eps_null = model.unet(x, t, text_null, anchor_null, cond)
        eps_full = model.unet(x, t, text, anchor, cond)
        if branches == 2:
            return eps_null + weights.text * (eps_full - eps_null)
        return multi_conditioned_cfg(eps_null, model.unet(x, t, text, anchor_null, cond), eps_full, weights)

    return step, tuple(x.shape), branches


def refine_step(model: VideoLDM, config: RefineConfig, switches: Switches):
    return cfg_step(model, config.chunk_frames, config.canvas_height, config.canvas_width, switches, config.guidance)


def count_flops(step: Callable[[], torch.Tensor]) -> float:
    """FLOPs of one call. Attention runs on the math backend here, whose two batched matmuls the
    counter sees on every device (fused CPU kernels have no FLOP formula); the count is the same."""
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        step()
    return float(counter.get_total_flops())


def attention_backend(switches: Switches):
    return contextlib.nullcontext() if switches.sdpa else sdpa_kernel(SDPBackend.MATH)


@torch.no_grad()
def time_step(stage: str, step: Callable[[], torch.Tensor], shape: tuple[int, ...], branches: int,
              switches: Switches, device: torch.device, repeats: int = 3, warmup: int = 1,
              flops: float | None = None) -> StepFigures:
    """Median wall seconds of ``repeats`` steps after ``warmup`` (compilation happens there)."""
    if flops is None:
        flops = count_flops(step)
    with attention_backend(switches):
        for _ in range(warmup + (2 if switches.compile else 0)):
            step()
        times = []
        for _ in range(repeats):
            synchronize(device)
            t0 = time.perf_counter()
            step()
            synchronize(device)
            times.append(time.perf_counter() - t0)
    return StepFigures(stage, shape, branches, statistics.median(times), flops, repeats)


@torch.no_grad()
def meta_step_flops(preset: str, weights: GuidanceWeights = GuidanceWeights()) -> dict[str, float]:
    """FLOPs of one step of each stage at a preset's real sizes, counted on the meta device (no
    memory, no GPU needed): init and extend at the preset's geometry, refine at its canvas."""
    from models.presets import REFINE_GEOMETRY, REFINER_PRESETS

    base = VideoLDM.from_preset(preset, device="meta")
    streaming = StreamingT2V.from_preset(preset, device="meta")
    refiner = VideoLDM.from_preset(REFINER_PRESETS[preset], device="meta")
    v = base.video
    config = RefineConfig(**REFINE_GEOMETRY[preset])
    default = Switches()
    out = {
        "init": count_flops(cfg_step(base, v.frames_per_chunk, v.height, v.width, default)[0]),
        "extend": count_flops(extend_step(streaming, default, weights)[0]),
        "refine": count_flops(refine_step(refiner, config, default)[0]),
    }
    frames = torch.zeros(1, 3, streaming.cond_frames, v.height, v.width, device="meta")
    out["econd"] = count_flops(lambda: streaming.unet.cam.encode_frames(frames))
    return out

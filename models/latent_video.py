"""What the Video-LDM and StreamingT2V share: VAE, CLIP text encoder, geometry and the DDIM loop.

Tensor conventions: frames are (b, 3, F, H, W) in [-1, 1]; latents are (b, c, F, h, w) scaled by
the VAE's scaling factor (diffusers convention).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler
from einops import rearrange
from transformers import CLIPTextModel, CLIPTokenizer

from models.errors import ConfigError, require
from models.presets import VideoConfig
from models.schedule import VIDEO_LDM_SCHEDULE, NoiseSchedule
from models.seeding import randn

#: (step index, number of steps) -> None; raise from it to stop a sampling loop.
StepCallback = Callable[[int, int], None]
NoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

GEOMETRY_FILE = "streamingt2v.json"
VAE_FRAMES_PER_BATCH = 16  # most frames per VAE call (results depend, in the last bits, on the batch)
#: most pixels per VAE call: 16 frames of 256x256 (ModelScope's size). A 1280x720 refine canvas goes
#: one frame per call, so the decoder's full-size activations stay near 1 GB in float16 instead of
#: about 15 GB for 16 frames; low-res and tiny videos keep 16 frames per call.
VAE_PIXELS_PER_BATCH = VAE_FRAMES_PER_BATCH * 256 * 256
logger = logging.getLogger(__name__)


def vae_frames_per_batch(height: int, width: int) -> int:
    """Frames of ``height`` x ``width`` pixels per VAE call: within ``VAE_PIXELS_PER_BATCH``, at
    least 1 and at most ``VAE_FRAMES_PER_BATCH``. Every caller splits a video by this one rule, so
    encoding or decoding it in pieces gives the same bits as in one call."""
    return max(1, min(VAE_FRAMES_PER_BATCH, VAE_PIXELS_PER_BATCH // (height * width)))


def vae_factor(vae: AutoencoderKL) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def load_geometry(path: str | Path, default: VideoConfig, schedule: NoiseSchedule) -> tuple[VideoConfig, NoiseSchedule]:
    """Video geometry and schedule saved beside the weights (absent in plain diffusers repos)."""
    file = Path(path) / GEOMETRY_FILE
    if not file.is_file():
        return default, schedule
    saved = json.loads(file.read_text())
    return VideoConfig(**saved["video"]), NoiseSchedule(**saved["schedule"])


def warn_if_schedule_differs(path: str, schedule: NoiseSchedule) -> None:
    """The sampler always uses ``schedule``; say so when the loaded repo's scheduler config
    disagrees (a model sampled with another schedule than it was trained with degrades)."""
    try:
        config = DDIMScheduler.load_config(path, subfolder="scheduler")
    except (OSError, ValueError):
        return
    if fields := schedule.differs_from(config):
        logger.warning("scheduler config of %s differs from the sampling schedule in %s; sampling with %s",
                       path, fields, schedule)


class LatentVideoModel:
    """VAE + text encoder + tokenizer + noise schedule + frame geometry."""

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer | None,
                 video: VideoConfig, schedule: NoiseSchedule = VIDEO_LDM_SCHEDULE, latent_factor: int = 1) -> None:
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.video = video
        self.schedule = schedule
        self.vae_scale = vae_factor(vae)
        multiple = self.vae_scale * latent_factor
        for name in ("height", "width"):
            value = getattr(video, name)
            require(value % multiple == 0, name, value,
                    f"a multiple of {multiple} (VAE x{self.vae_scale}, UNet x{latent_factor})")

    # -- properties -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.vae.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    def parts(self) -> tuple[torch.nn.Module, ...]:
        """The networks (subclasses add theirs), for moving and casting them together."""
        return (self.vae, self.text_encoder)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None):
        """Move every network to ``device`` and, if given, cast it to ``dtype``. A network that
        already has that dtype is not cast (diffusers warns on every cast)."""
        for module in self.parts():
            module.to(device)
            if dtype is not None and module.dtype != dtype:
                module.to(dtype=dtype)
        return self

    def latent_shape(self, batch: int, frames: int) -> tuple[int, ...]:
        return (batch, self.vae.config.latent_channels, frames,
                self.video.height // self.vae_scale, self.video.width // self.vae_scale)

    # -- text ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """CLIP text tokens (b, 77, d). Prompts longer than the 77-token context are truncated
        (as CLIP does); callers that must refuse them check ``prompt_token_count`` first."""
        if self.tokenizer is None:
            raise ConfigError("tokenizer", None, "a CLIP tokenizer (load the model with from_pretrained)")
        context = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
        ids = self.tokenizer(prompts, padding="max_length", max_length=context,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0].to(self.dtype)

    # -- VAE ----------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(b, c, F, h, w) latents -> (b, 3, F, H, W) frames in [-1, 1], ``vae_frames_per_batch``
        frames at a time."""
        b, per_call = latents.shape[0], vae_frames_per_batch(latents.shape[3] * self.vae_scale,
                                                             latents.shape[4] * self.vae_scale)
        flat = rearrange(latents, "b c f h w -> (b f) c h w") / self.vae.config.scaling_factor
        images = torch.cat([self.vae.decode(z.to(self.device, self.dtype)).sample for z in flat.split(per_call)])
        return rearrange(images.clamp(-1, 1), "(b f) c h w -> b c f h w", b=b)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(b, 3, F, H, W) frames in [-1, 1] -> latents (posterior mean, scaled),
        ``vae_frames_per_batch`` frames at a time."""
        b, per_call = frames.shape[0], vae_frames_per_batch(frames.shape[3], frames.shape[4])
        flat = rearrange(frames, "b c f h w -> (b f) c h w")
        z = torch.cat([self.vae.encode(x.to(self.device, self.dtype)).latent_dist.mode()
                       for x in flat.split(per_call)])
        return rearrange(z * self.vae.config.scaling_factor, "(b f) c h w -> b c f h w", b=b)

    # -- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def ddim_sample(self, noise_fn: NoiseFn, shape: tuple[int, ...], generators: list[torch.Generator],
                    num_inference_steps: int | None = None, on_step: StepCallback | None = None) -> torch.Tensor:
        """DDIM (eta from the schedule, paper: 1.0) from pure noise.

        ``noise_fn(x_t, t)`` returns the guided noise prediction. Video i of the batch draws all
        its noise, the initial latent and the eta-noise of every step, from ``generators[i]`` in
        a fixed order, so its result does not depend on the other videos of the batch.
        """
        require(len(generators) == shape[0], "generators", len(generators), f"one per video ({shape[0]})")
        schedule = self.schedule if num_inference_steps is None else self.schedule.with_steps(num_inference_steps)
        scheduler = schedule.make_scheduler()
        scheduler.set_timesteps(schedule.num_inference_steps, device=self.device)
        latents = self._randn(shape, generators) * scheduler.init_noise_sigma
        steps = len(scheduler.timesteps)
        for i, t in enumerate(scheduler.timesteps):
            eps = noise_fn(latents, t)
            noise = self._randn(shape, generators) if schedule.eta > 0 else None
            latents = scheduler.step(eps, t, latents, eta=schedule.eta, variance_noise=noise).prev_sample
            if on_step is not None:
                on_step(i + 1, steps)
        return latents

    def _randn(self, shape: tuple[int, ...], generators: list[torch.Generator]) -> torch.Tensor:
        return torch.cat([randn((1, *shape[1:]), g, self.device, self.dtype) for g in generators])

    def _save_common(self, path: Path) -> None:
        self.vae.save_pretrained(path / "vae")
        self.text_encoder.save_pretrained(path / "text_encoder")
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path / "tokenizer")
        self.schedule.make_scheduler().save_pretrained(path / "scheduler")
        (path / GEOMETRY_FILE).write_text(json.dumps(
            {"video": asdict(self.video), "schedule": asdict(self.schedule)}, indent=2))

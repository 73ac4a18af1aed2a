"""refine: upscale + SDEdit with a high-resolution video model on overlapping chunks with shared
noise and randomized blending (paper Sec. 4.3, Fig. 2 stage 3).

The stage's input is the low-resolution video as 8-bit frames (what the extend stage publishes),
so the in-process run and the distributed, pipeline-parallel run refine exactly the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from infra.video_io import from_uint8, to_uint8
from models.guidance import text_cfg
from models.latent_video import vae_frames_per_batch
from models.chunk_plan import ChunkPlan
from models.refinement import (ChunkRefiner, RefineConfig, from_canvas, refine_sequential, sdedit_timesteps,
                               to_canvas)
from models.schedule import NoiseSchedule
from models.video_ldm import VideoLDM
from models.request import GenerationRequest
from stages.residency import Residency


def _batches(frames: np.ndarray, config: RefineConfig) -> list[np.ndarray]:
    """Low-res frames in the VAE's batches at the canvas size (so that encoding them one batch at a
    time changes nothing)."""
    n = vae_frames_per_batch(config.canvas_height, config.canvas_width)
    return [frames[i:i + n] for i in range(0, len(frames), n)]


def refine_config_for(config: RefineConfig, request: GenerationRequest) -> RefineConfig:
    """The refiner's geometry with the request's blending mode, step spacing and guidance."""
    return replace(config, blend=request.blend, num_inference_steps=request.refine_steps,
                   guidance=request.refine_guidance)


def refine_layout(config: RefineConfig, schedule: NoiseSchedule, request: GenerationRequest) -> tuple[ChunkPlan, int]:
    """A request's refine chunks and its SDEdit step count (from T' down) under ``schedule``."""
    config = refine_config_for(config, request)
    return config.plan(request.num_frames), len(sdedit_timesteps(schedule, config))


class RefineStage:
    """Loads the refiner once. ``__call__`` refines one video in the paper's sequential order; the
    distributed layout uses :meth:`encode`, :meth:`session` and :meth:`decode` around the same
    per-chunk steps."""

    def __init__(self, model: VideoLDM, config: RefineConfig, residency: Residency | None = None) -> None:
        self.model = model
        self.config = config
        self.residency = residency or Residency(str(model.device))

    def config_for(self, request: GenerationRequest) -> RefineConfig:
        return refine_config_for(self.config, request)

    def encode(self, request: GenerationRequest, low_res: np.ndarray) -> torch.Tensor:
        """(N, h, w, 3) uint8 -> clean canvas latents z_0 (1, c, N, H', W') of the refiner's VAE,
        made one VAE batch of canvas frames at a time (the whole canvas video never exists) and
        kept where the residency holds long tensors (CPU memory in low-memory mode)."""
        self.residency.use(self.model)
        config = self.config_for(request)
        return torch.cat([self.model.encode(to_canvas(from_uint8(part).to(self.model.device, self.model.dtype), config)
                                            ).to(self.residency.holding) for part in _batches(low_res, config)], dim=2)

    def session(self, request: GenerationRequest, clean_shape: tuple[int, ...]) -> "RefineSession":
        config = self.config_for(request)
        refiner = ChunkRefiner(clean_shape[2], (clean_shape[1], clean_shape[3], clean_shape[4]),
                               self.model.schedule, config, request.seed)
        # Each chunk follows the prompt in force at its first new frame (models.prompt_schedule).
        self.residency.use(self.model)
        schedule = request.schedule
        encoded = {p: self.model.encode_prompt([request.negative_prompt, p]) for p in schedule.prompts()}
        texts = [encoded[schedule.for_chunk(chunk)] for chunk in refiner.chunks]
        return RefineSession(refiner, self.model, texts, request.refine_guidance)

    def decode(self, request: GenerationRequest, latents: torch.Tensor) -> np.ndarray:
        """Long refined latent -> (N, H, W, 3) uint8 frames with the padding cropped off, one VAE
        batch at a time, each straight to 8-bit frames in CPU memory."""
        self.residency.use(self.model)
        config = self.config_for(request)
        per_call = vae_frames_per_batch(config.canvas_height, config.canvas_width)
        return np.concatenate([to_uint8(from_canvas(self.model.decode(part), config))
                               for part in latents.split(per_call, dim=2)])

    @torch.no_grad()
    def __call__(self, request: GenerationRequest, low_res: np.ndarray,
                 on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
        clean = self.encode(request, low_res)
        session = self.session(request, tuple(clean.shape))
        latents = refine_sequential(session.refiner, clean, session.noise, on_step)
        return self.decode(request, latents)


class RefineSession:
    """One video's refinement state that every chunk step needs: the chunk maths and each chunk's
    text tokens (negative prompt, prompt)."""

    def __init__(self, refiner: ChunkRefiner, model: VideoLDM, texts: list[torch.Tensor], guidance: float) -> None:
        self.refiner = refiner
        self.model = model
        self.texts = texts
        self.guidance = guidance

    @torch.no_grad()
    def noise(self, x: torch.Tensor, t: int, index: int) -> torch.Tensor:
        """Text classifier-free guidance of the refiner on chunk ``index``; at weight 1 the guided
        noise is the text branch's, which alone is evaluated (half the UNet work). The chunk goes
        to the model's device for the call and comes back (low memory keeps chunks in CPU memory)."""
        text, home, x = self.texts[index], x.device, x.to(self.model.device)
        if self.guidance == 1.0:
            return self.model.unet(x, t, text[1:]).sample.to(home)
        eps_null, eps_text = self.model.unet(torch.cat([x, x]), t, text).sample.chunk(2)
        return text_cfg(eps_null, eps_text, self.guidance, self.refiner.config.guidance_rescale).to(home)

    @torch.no_grad()
    def step(self, index: int, step: int, x: torch.Tensor) -> torch.Tensor:
        """Chunk ``index`` from its step-``step`` input to its latent after that step (pre-blend)."""
        chunk = self.refiner.chunks[index]
        return self.refiner.step(chunk, step, x, self.noise(x, self.refiner.timesteps[step], index))

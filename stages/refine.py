"""refine: upscale + SDEdit with a high-resolution video model on overlapping chunks with shared
noise and randomized blending (paper Sec. 4.3, Fig. 2 stage 3)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.guidance import text_cfg
from models.refinement import ChunkRefiner, RefineConfig, from_canvas, refine_sequential, to_canvas
from models.video_ldm import VideoLDM
from stages.request import GenerationRequest


class RefineStage:
    """Loads the refiner once; :meth:`__call__` refines one low-resolution video."""

    def __init__(self, model: VideoLDM, config: RefineConfig) -> None:
        self.model = model
        self.config = config

    def config_for(self, request: GenerationRequest) -> RefineConfig:
        from dataclasses import replace

        return replace(self.config, blend=request.blend, num_inference_steps=request.refine_steps,
                       guidance=request.refine_guidance)

    def prepare(self, request: GenerationRequest, low_res: torch.Tensor) -> tuple[ChunkRefiner, torch.Tensor]:
        """Encode the upscaled, padded video; the ChunkRefiner that will denoise it."""
        config = self.config_for(request)
        clean = self.model.encode(to_canvas(low_res.to(self.model.device), config))
        refiner = ChunkRefiner(clean.shape[2], tuple(clean.shape[i] for i in (1, 3, 4)), self.model.schedule,
                               config, request.seed)
        return refiner, clean

    def noise_fn(self, request: GenerationRequest) -> Callable[[torch.Tensor, int], torch.Tensor]:
        text = self.model.encode_prompt([request.negative_prompt, request.prompt])
        unet = self.model.unet

        @torch.no_grad()
        def noise(x: torch.Tensor, t: int) -> torch.Tensor:
            eps_null, eps_text = unet(torch.cat([x, x]), t, text).sample.chunk(2)
            return text_cfg(eps_null, eps_text, request.refine_guidance)

        return noise

    def finish(self, refiner: ChunkRefiner, latents: torch.Tensor) -> torch.Tensor:
        return from_canvas(self.model.decode(latents), refiner.config)

    @torch.no_grad()
    def __call__(self, request: GenerationRequest, low_res: torch.Tensor,
                 on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """(1, 3, N, h, w) low-res frames -> (1, 3, N, target_h, target_w) refined frames."""
        refiner, clean = self.prepare(request, low_res)
        latents = refine_sequential(refiner, clean, self.noise_fn(request), on_step)
        return self.finish(refiner, latents)

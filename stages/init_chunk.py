"""init-chunk: prompt -> the first F = 16 frames with the Video-LDM (paper Fig. 2, stage 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.latent_video import StepCallback
from models.seeding import stream
from models.video_ldm import VideoLDM
from models.request import GenerationRequest


@dataclass
class ChunkOutput:
    latents: torch.Tensor  # (1, c, F, h, w)
    frames: torch.Tensor  # (1, 3, F, H, W) in [-1, 1]


class InitChunkStage:
    """Loads the Video-LDM once; each call makes one video's first chunk."""

    def __init__(self, model: VideoLDM) -> None:
        self.model = model

    def generate(self, request: GenerationRequest, on_step: StepCallback | None = None) -> torch.Tensor:
        return self.model.sample_chunk([request.prompt], [stream(request.seed, "init")], request.guidance_text,
                                       [request.negative_prompt], request.num_inference_steps, on_step)

    def __call__(self, request: GenerationRequest, on_step: StepCallback | None = None) -> ChunkOutput:
        latents = self.generate(request, on_step)
        return ChunkOutput(latents, self.model.decode(latents))

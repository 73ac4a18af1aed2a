"""init-chunk: prompt -> the first F = 16 frames with the Video-LDM (paper Fig. 2, stage 1); or,
for a video that starts from a user's clip or image, those frames as given."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infra import init_media
from infra.video_io import from_uint8
from models.latent_video import LatentVideoModel, StepCallback
from models.presets import VideoConfig
from models.seeding import stream
from models.video_ldm import VideoLDM
from models.request import GenerationRequest
from stages.residency import Residency


@dataclass
class ChunkOutput:
    latents: torch.Tensor  # (1, c, F, h, w)
    frames: torch.Tensor  # (1, 3, F, H, W) in [-1, 1]


class InitChunkStage:
    """Loads the Video-LDM once; each call makes one video's first chunk."""

    def __init__(self, model: VideoLDM, residency: Residency | None = None) -> None:
        self.model = model
        self.residency = residency or Residency(str(model.device))

    def generate(self, request: GenerationRequest, on_step: StepCallback | None = None) -> torch.Tensor:
        self.residency.use(self.model)
        return self.model.sample_chunk([request.prompt], [stream(request.seed, "init")], request.guidance_text,
                                       [request.negative_prompt], request.num_inference_steps, on_step)

    def __call__(self, request: GenerationRequest, on_step: StepCallback | None = None) -> ChunkOutput:
        latents = self.generate(request, on_step)
        return ChunkOutput(latents, self.model.decode(latents))


def load_given(request: GenerationRequest, root: str, video: VideoConfig) -> torch.Tensor | None:
    """The frames a staged request starts with, (1, 3, L, H, W) in [-1, 1] at ``video``'s size, or
    None for a video made from text."""
    if not request.given_frames:
        return None
    field = "init_video" if request.init_video else "init_image"
    uri = init_media.staged_uri(root, getattr(request, field))
    return from_uint8(init_media.load_frames(uri, request.given_frames, video.height, video.width, field))


def given_chunk(model: LatentVideoModel, given: torch.Tensor, cond_frames: int) -> ChunkOutput:
    """Chunk 0 of a video that starts from given frames: the frames as given (with the first one
    repeated in front when there are fewer than ``cond_frames``, so that the next chunk has its
    conditioning frames), and the latents of its last ``cond_frames`` frames (what a next chunk's
    condition replacement pins)."""
    if given.shape[2] < cond_frames:
        given = torch.cat([given[:, :, :1].expand(-1, -1, cond_frames - given.shape[2], -1, -1), given], dim=2)
    frames = given.to(model.device, model.dtype)
    return ChunkOutput(model.encode(frames[:, :, -cond_frames:]), frames)

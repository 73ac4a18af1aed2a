"""Streaming refinement (paper Sec. 4.3): SDEdit with a high-resolution video model on
overlapping chunks, with shared noise (Eq. 7) and randomized blending (Eq. 8).

The long low-resolution video is upscaled (bilinear) to the target size, zero-padded (black) to
the refiner's canvas, encoded, noised to T' = 600 of 1000 and denoised chunk by chunk (24
frames overlapping by 8). :class:`ChunkRefiner` holds the per-chunk mathematics; the sequential
order (:func:`refine_sequential`) and the pipeline-parallel layout of the distributed refine
stage call the same functions, so their results are bit-identical.

Randomness is a function of (seed, step, frame) or (seed, step, boundary), never of the order in
which chunks run:

* shared noise (Eq. 7): frame j of the long video gets the same noise in every chunk that covers
  it, at SDEdit initialisation and at every DDIM step (eta > 0); equivalently eps_i is eps_{i-1}'s
  last O frames followed by fresh noise for the F - O new frames.
* randomized blending (Eq. 8): at every step and for every pair of consecutive chunks, f_thr is
  drawn uniformly from {0, ..., O}; overlap frames before f_thr come from the left chunk, the
  others from the right chunk (frame f = 1..O comes from the left with probability
  1 - f / (O + 1)), and the merged overlap is what both chunks continue from.

Ablations (App. D.3): ``independent`` gives every chunk its own noise and never blends;
``shared-noise`` shares noise without blending. Both stitch the finished chunks with a fixed cut
in the middle of each overlap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from models.chunk_plan import Chunk, ChunkPlan, Overlap
from models.errors import require
from models.schedule import NoiseSchedule
from models.seeding import stream

BlendMode = Literal["randomized", "shared-noise", "independent"]
BLEND_MODES: tuple[str, ...] = ("randomized", "shared-noise", "independent")


@dataclass(frozen=True)
class RefineConfig:
    """Refinement settings; defaults are the paper's (720x720 in a 1280x720 canvas, T' = 600,
    chunks of 24 overlapping by 8, randomized blending)."""

    target_height: int = 720
    target_width: int = 720
    canvas_height: int = 720
    canvas_width: int = 1280
    noise_level: int = 600  # T'
    chunk_frames: int = 24
    overlap: int = 8
    blend: BlendMode = "randomized"
    num_inference_steps: int = 50  # DDIM spacing over the 1000 steps; T' = 600 then takes 30 steps
    guidance: float = 7.5
    guidance_rescale: float = 0.0  # phi of guidance rescale (models.guidance.text_cfg); MS-Vid2Vid-XL: 0.2

    def __post_init__(self) -> None:
        require(self.blend in BLEND_MODES, "blend", self.blend, f"one of {list(BLEND_MODES)}")
        require(0 < self.target_height <= self.canvas_height, "target_height", self.target_height,
                f"in [1, canvas_height={self.canvas_height}]")
        require(0 < self.target_width <= self.canvas_width, "target_width", self.target_width,
                f"in [1, canvas_width={self.canvas_width}]")
        require(1 <= self.noise_level <= 1000, "noise_level", self.noise_level, "an integer in [1, 1000]")
        require(math.isfinite(self.guidance) and self.guidance >= 0, "guidance", self.guidance,
                "a finite number >= 0")
        require(math.isfinite(self.guidance_rescale) and 0 <= self.guidance_rescale <= 1, "guidance_rescale",
                self.guidance_rescale, "a number in [0, 1]")
        require(self.num_inference_steps >= 1, "num_inference_steps", self.num_inference_steps, "an integer >= 1")
        ChunkPlan.for_refine(self.chunk_frames, self.chunk_frames, self.overlap)  # validates chunk/overlap

    def plan(self, num_frames: int) -> ChunkPlan:
        return ChunkPlan.for_refine(num_frames, self.chunk_frames, self.overlap)


# -- geometry ---------------------------------------------------------------------------------
def to_canvas(frames: torch.Tensor, config: RefineConfig) -> torch.Tensor:
    """(b, 3, N, h, w) in [-1, 1] -> bilinear upscale to the target size, centred on a black canvas."""
    b, _, n = frames.shape[:3]
    x = frames.permute(0, 2, 1, 3, 4).flatten(0, 1).float()
    x = F.interpolate(x, size=(config.target_height, config.target_width), mode="bilinear", align_corners=False)
    top, left = _offsets(config)
    x = F.pad(x, (left, config.canvas_width - config.target_width - left,
                  top, config.canvas_height - config.target_height - top), value=-1.0)
    return x.unflatten(0, (b, n)).permute(0, 2, 1, 3, 4).to(frames.dtype)


def from_canvas(frames: torch.Tensor, config: RefineConfig) -> torch.Tensor:
    """Crop the padding off refined canvas frames (b, 3, N, H, W)."""
    top, left = _offsets(config)
    return frames[..., top:top + config.target_height, left:left + config.target_width]


def _offsets(config: RefineConfig) -> tuple[int, int]:
    return (config.canvas_height - config.target_height) // 2, (config.canvas_width - config.target_width) // 2


# -- randomness ---------------------------------------------------------------------------------
def shared_noise(seed: int, tag: str, frames: range, frame_shape: tuple[int, ...]) -> torch.Tensor:
    """Eq. 7: noise (1, c, len(frames), h, w) in which video frame j always gets the same draw."""
    return torch.stack([torch.randn(frame_shape, generator=stream(seed, tag, j)) for j in frames], dim=1)[None]


def blend_cut(seed: int, step: int, overlap: Overlap) -> int:
    """f_thr of Eq. 8 for one pair of chunks at one step, uniform on {0, ..., O}."""
    g = stream(seed, f"refine/blend/{step}", overlap.left)
    return int(torch.randint(0, overlap.frames + 1, (1,), generator=g))


def randomized_blend(left: torch.Tensor, right: torch.Tensor, cut: int) -> torch.Tensor:
    """Eq. 8 on one overlap: frames [0, cut) from the left chunk, [cut, O) from the right one."""
    return torch.cat([left[:, :, :cut], right[:, :, cut:]], dim=2)


# -- the per-chunk mathematics ------------------------------------------------------------------
def sdedit_timesteps(schedule: NoiseSchedule, config: RefineConfig) -> list[int]:
    """DDIM timesteps from T' down: T', T' - s, ..., with s = 1000 / num_inference_steps."""
    spacing = schedule.num_train_timesteps // config.num_inference_steps
    return list(range(config.noise_level, 0, -spacing))


class ChunkRefiner:
    """SDEdit for every chunk of one video: noising, one DDIM step, the blended continuation."""

    def __init__(self, num_frames: int, frame_shape: tuple[int, ...], schedule: NoiseSchedule,
                 config: RefineConfig, seed: int) -> None:
        self.plan = config.plan(num_frames)
        self.config = config
        self.seed = seed
        self.frame_shape = frame_shape  # (c, h, w) of one latent frame
        self.schedule = schedule
        self.scheduler = schedule.make_scheduler()
        self.scheduler.set_timesteps(config.num_inference_steps)  # sets the DDIM spacing used by step()
        self.timesteps = sdedit_timesteps(schedule, config)

    @property
    def chunks(self) -> tuple[Chunk, ...]:
        return self.plan.chunks

    def noise(self, chunk: Chunk, tag: str) -> torch.Tensor:
        if self.config.blend == "independent":
            g = stream(self.seed, f"{tag}/chunk", chunk.index)
            return torch.randn((1, self.frame_shape[0], chunk.frames, *self.frame_shape[1:]), generator=g)
        return shared_noise(self.seed, tag, range(chunk.start, chunk.stop), self.frame_shape)

    def initial(self, chunk: Chunk, z0: torch.Tensor) -> torch.Tensor:
        """x_T' = sqrt(alpha_bar) z_0 + sqrt(1 - alpha_bar) eps for the chunk's clean latents z0."""
        eps = self.noise(chunk, "refine/sdedit").to(z0.device, z0.dtype)
        return self.scheduler.add_noise(z0, eps, torch.tensor([self.config.noise_level]))

    def step(self, chunk: Chunk, step: int, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """One DDIM step of one chunk (eta from the schedule; its noise shared per frame)."""
        t = self.timesteps[step]
        noise = None
        if self.schedule.eta > 0:
            noise = self.noise(chunk, f"refine/ddim/{step}").to(x.device, x.dtype)
        return self.scheduler.step(eps, t, x, eta=self.schedule.eta, variance_noise=noise).prev_sample

    def blended(self, index: int, step: int, stepped: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """Chunk ``index``'s latent after randomized blending with its neighbours at ``step``.
        ``stepped(j)`` is chunk j's latent after the step (only j in index-1..index+1 are asked)."""
        own = stepped(index)
        if self.config.blend != "randomized":
            return own
        x = own.clone()
        overlaps = self.plan.overlaps
        if index > 0:
            o = overlaps[index - 1]
            cut = blend_cut(self.seed, step, o)
            x[:, :, :o.frames] = randomized_blend(stepped(index - 1)[:, :, -o.frames:], own[:, :, :o.frames], cut)
        if index < len(self.chunks) - 1:
            o = overlaps[index]
            cut = blend_cut(self.seed, step, o)
            x[:, :, -o.frames:] = randomized_blend(own[:, :, -o.frames:], stepped(index + 1)[:, :, :o.frames], cut)
        return x

    def assemble(self, latents: Sequence[torch.Tensor]) -> torch.Tensor:
        """The long latent from finished chunks: each overlap cut in its middle (after randomized
        blending both chunks already agree on it)."""
        parts = []
        for chunk in self.chunks:
            lo = 0 if chunk.index == 0 else self.plan.overlaps[chunk.index - 1].frames // 2
            hi = chunk.frames
            if chunk.index < len(self.chunks) - 1:
                o = self.plan.overlaps[chunk.index].frames
                hi = chunk.frames - o + o // 2
            parts.append(latents[chunk.index][:, :, lo:hi])
        return torch.cat(parts, dim=2)


#: (chunk latent x_t, timestep t, chunk index) -> the guided noise prediction for that chunk.
NoiseFn = Callable[[torch.Tensor, int, int], torch.Tensor]


def refine_sequential(refiner: ChunkRefiner, clean: torch.Tensor, noise_fn: NoiseFn,
                      on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """The paper's order: at every step denoise chunk 1..m, then blend every overlap."""
    latents = [refiner.initial(c, clean[:, :, c.start:c.stop]) for c in refiner.chunks]
    for s, t in enumerate(refiner.timesteps):
        stepped = [refiner.step(c, s, latents[c.index], noise_fn(latents[c.index], t, c.index)) for c in refiner.chunks]
        latents = [refiner.blended(c.index, s, stepped.__getitem__) for c in refiner.chunks]
        if on_step is not None:
            on_step(s + 1, len(refiner.timesteps))
    return refiner.assemble(latents)

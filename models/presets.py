"""Model presets: the one place that says how big each component is.

* ``modelscope``: the paper's sizes. Video-LDM = ModelScope text-to-video 1.7B (UNet3D with
  block widths 320/640/1280/1280, cross-attention 1024, SD VAE, OpenCLIP ViT-H text tower),
  OpenCLIP ViT-H/14 image tower for APM (embedding 1024), CAM token dims 320/640/1280.
* ``tiny``: the same architecture shrunk for CPU tests and the embedded default (latent 16x16x4
  at 64x64 pixels: a x4 VAE, UNet widths 32/64). Its trained weights are the toy-world model
  (toyworld/, training/).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from models.apm import APMConfig
from models.cam import CAMConfig
from models.chunk_plan import ChunkPlan
from models.errors import ConfigError, require
from models.schedule import VIDEO_LDM_SCHEDULE, NoiseSchedule


@dataclass(frozen=True)
class VideoConfig:
    """Frame geometry of the Video-LDM (paper: F = 16 frames of 256x256 per chunk)."""

    height: int = 256
    width: int = 256
    frames_per_chunk: int = 16  # F

    def __post_init__(self) -> None:
        require(self.frames_per_chunk >= 2, "frames_per_chunk", self.frames_per_chunk, "an integer >= 2")
        for name in ("height", "width"):
            require(getattr(self, name) >= 8, name, getattr(self, name), "an integer >= 8")


@dataclass(frozen=True)
class ModelPreset:
    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    image_encoder: dict[str, Any]
    cam: CAMConfig
    apm: APMConfig
    video: VideoConfig
    schedule: NoiseSchedule = VIDEO_LDM_SCHEDULE
    base_model_id: str | None = None  # diffusers-format Video-LDM (hub id or directory)
    image_encoder_id: str | None = None  # transformers-format CLIP vision tower
    # Whether from_preset can build the tokenizer offline (the byte-level tiny tokenizer); real
    # presets load the released CLIP tokenizer with their weights.
    offline_tokenizer: bool = False

    def extend_plan(self, num_frames: int, given: int = 0) -> ChunkPlan:
        """The chunks of a ``num_frames`` video at this preset's geometry (what extend plans),
        starting with ``given`` frames of a user's clip or image (0: an init chunk from text)."""
        return ChunkPlan.for_extend(num_frames, self.video.frames_per_chunk, self.cam.cond_frames, given)


MODELSCOPE = ModelPreset(
    name="modelscope",
    unet=dict(
        sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, act_fn="silu",
        norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=1024, attention_head_dim=64,
    ),
    vae=dict(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=256, layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512), norm_num_groups=32, scaling_factor=0.18215,
    ),
    text_encoder=dict(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
        num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
    ),
    image_encoder=dict(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu",
    ),
    cam=CAMConfig(cond_frames=8, frame_encoder_channels=(32, 96, 256, 512), attention_head_dim=64),
    apm=APMConfig(image_embed_dim=1024, hidden_dim=1280, num_image_tokens=16, token_dim=1024),
    video=VideoConfig(height=256, width=256, frames_per_chunk=16),
    base_model_id="ali-vilab/text-to-video-ms-1.7b",
    image_encoder_id="laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
)

TINY = ModelPreset(
    name="tiny",
    unet=dict(
        sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
        attention_head_dim=8,
    ),
    vae=dict(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32), norm_num_groups=8, scaling_factor=0.18215,
    ),
    text_encoder=dict(
        vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=32, bos_token_id=512, eos_token_id=513,
        pad_token_id=513,
    ),
    image_encoder=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, projection_dim=24, hidden_act="gelu",
    ),
    # The toy-world CAM orders its conditioning frames with the distance bias (models/cam.py):
    # Eq. 4's attention alone sees them as an unordered set (docs/toyworld.md).
    cam=CAMConfig(cond_frames=8, frame_encoder_channels=(8, 16, 32), attention_head_dim=8, frame_distance_bias=True),
    apm=APMConfig(image_embed_dim=24, hidden_dim=40, num_image_tokens=16, token_dim=32),
    video=VideoConfig(height=64, width=64, frames_per_chunk=16),
    offline_tokenizer=True,
)

PRESETS: dict[str, ModelPreset] = {p.name: p for p in (TINY, MODELSCOPE)}

# Refiners: a video UNet3D used for SDEdit at high resolution (paper: MS-Vid2Vid-XL at 1280x720).
# Real refiners load with their own schedule: MS-Vid2Vid-XL from its ModelScope folder or the
# directory convert_vid2vid_xl writes (models/vid2vid_xl.py), any other from a diffusers directory
# or hub id with its scheduler config. The tiny one refines 64x64 videos at 128x128, twice the size
# per side, on a canvas of that size (the paper's padding to 1280x720 is the size MS-Vid2Vid-XL
# was trained at).
TINY_REFINER = replace(TINY, name="tiny-refiner", video=VideoConfig(height=128, width=128, frames_per_chunk=24))
# The refiner built with random weights (tests; benchmarks, where compute does not depend on
# weight values): for modelscope the ModelScope UNet3D itself, run at the refinement canvas.
REFINER_PRESETS: dict[str, ModelPreset] = {"tiny": TINY_REFINER, "modelscope": MODELSCOPE}
REFINE_GEOMETRY: dict[str, dict[str, int]] = {
    "tiny": dict(target_height=128, target_width=128, canvas_height=128, canvas_width=128),
    "modelscope": dict(target_height=720, target_width=720, canvas_height=720, canvas_width=1280),
}


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise ConfigError("preset", name, f"one of {sorted(PRESETS)}")
    return PRESETS[name]


def reference_variant(preset: ModelPreset) -> ModelPreset:
    """The module layout of the authors' released checkpoint: E_cond without norms, and per-layer
    APM token mixers with LayerNorm (see models/convert_official.py)."""
    return replace(preset, name=f"{preset.name}-reference",
                   cam=replace(preset.cam, frame_encoder_norm=False, frame_distance_bias=False),
                   apm=replace(preset.apm, token_mixing="per_layer", mixer_norm=True))

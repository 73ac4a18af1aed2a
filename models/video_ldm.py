"""The base text-to-short-video model (Video-LDM, ModelScope-style): it makes the init chunk."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from models.errors import require
from models.guidance import text_cfg
from models.latent_video import LatentVideoModel, StepCallback, load_geometry, warn_if_schedule_differs
from models.presets import ModelPreset, VideoConfig, get_preset
from models.schedule import VIDEO_LDM_SCHEDULE, NoiseSchedule
from models.token_chunks import chunk_feed_forwards
from models.tokenizer import tiny_clip_tokenizer
from models.vid2vid_unet import Vid2VidUNet, latent_size_fits

UNET_CLASSES = {cls.__name__: cls for cls in (UNet3DConditionModel, Vid2VidUNet)}


def unet_factor(unet: UNet3DConditionModel) -> int:
    """The factor the latent's sides must be a multiple of (MS-Vid2Vid-XL's UNet has its own rule)."""
    return 1 if isinstance(unet, Vid2VidUNet) else 2 ** unet.num_upsamplers


class VideoLDM(LatentVideoModel):
    """UNet3D + VAE + CLIP text encoder + DDIM (paper Sec. 3, Table 12)."""

    def __init__(self, unet: UNet3DConditionModel, vae: AutoencoderKL, text_encoder: CLIPTextModel,
                 tokenizer: CLIPTokenizer | None, video: VideoConfig,
                 schedule: NoiseSchedule = VIDEO_LDM_SCHEDULE) -> None:
        super().__init__(vae, text_encoder, tokenizer, video, schedule, latent_factor=unet_factor(unet))
        if isinstance(unet, Vid2VidUNet):
            size = (video.height // self.vae_scale, video.width // self.vae_scale)
            require(latent_size_fits(*size, unet.num_upsamplers), "video", (video.height, video.width),
                    f"a size whose latent is even at each of the UNet's {unet.num_upsamplers} downsampling levels")
        self.unet = chunk_feed_forwards(unet)

    @torch.no_grad()
    def sample_chunk(self, prompts: list[str], generators: list[torch.Generator], w_text: float = 7.5,
                     negative_prompts: list[str] | None = None, num_inference_steps: int | None = None,
                     on_step: StepCallback | None = None) -> torch.Tensor:
        """The init chunk: F frames of latents from text alone, with classifier-free guidance."""
        b = len(prompts)
        text = self.encode_prompt(list(negative_prompts or [""] * b) + list(prompts))

        def noise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            eps_null, eps_text = self.unet(torch.cat([x, x]), t, text).sample.chunk(2)
            return text_cfg(eps_null, eps_text, w_text)

        shape = self.latent_shape(b, self.video.frames_per_chunk)
        return self.ddim_sample(noise, shape, generators, num_inference_steps, on_step)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, preset: str | ModelPreset, seed: int = 0, device: str | torch.device = "cpu") -> "VideoLDM":
        """Random weights from a preset's configs (tests, benchmarks, the ``tiny`` default; on the
        ``meta`` device for shape and size checks of the real architecture)."""
        preset = get_preset(preset) if isinstance(preset, str) else preset
        torch.manual_seed(seed)
        with torch.device(device):
            unet = UNet3DConditionModel(**preset.unet)
            vae = AutoencoderKL(**preset.vae)
            text_encoder = CLIPTextModel(CLIPTextConfig(**preset.text_encoder))
        tokenizer = tiny_clip_tokenizer() if preset.offline_tokenizer else None
        return cls(unet.eval(), vae.eval(), text_encoder.eval(), tokenizer, preset.video, preset.schedule)

    @classmethod
    def from_pretrained(cls, path: str | Path, video: VideoConfig | None = None,
                        torch_dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                        variant: str | None = None,
                        schedule: NoiseSchedule | None = VIDEO_LDM_SCHEDULE) -> "VideoLDM":
        """Load a diffusers-format Video-LDM (a local directory or a hub id such as
        ``ali-vilab/text-to-video-ms-1.7b``) with subfolders unet, vae, text_encoder, tokenizer.

        ``schedule=None`` samples with the repo's own scheduler config (refiners); by default the
        paper's schedule is used and a disagreeing repo config is reported."""
        path = str(path)
        if schedule is None:
            schedule = NoiseSchedule.from_scheduler_config(DDIMScheduler.load_config(path, subfolder="scheduler"))
        video, schedule = load_geometry(path, video or VideoConfig(), schedule)
        kw = dict(torch_dtype=torch_dtype, variant=variant)
        unet_class = UNET_CLASSES.get(UNet3DConditionModel.load_config(path, subfolder="unet").get("_class_name"),
                                      UNet3DConditionModel)
        unet = unet_class.from_pretrained(path, subfolder="unet", **kw)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **kw)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", dtype=torch_dtype)
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
        warn_if_schedule_differs(path, schedule)
        model = cls(unet.eval(), vae.eval(), text_encoder.eval(), tokenizer, video, schedule)
        return model.to(device)

    def parts(self) -> tuple[torch.nn.Module, ...]:
        return (*super().parts(), self.unet)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.unet.save_pretrained(path / "unet")
        self._save_common(path)

"""StreamingT2V's extension model: Video-LDM UNet + CAM + APM + CLIP image encoder (paper Sec. 4).

:meth:`StreamingT2V.sample_chunk` generates the next chunk of F frames conditioned on the last
F_cond frames of the video so far (CAM) and on the anchor frame's CLIP embedding (APM), with the
multi-conditioned guidance of Eq. 13.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from transformers import (CLIPTextModel, CLIPTokenizer, CLIPVisionConfig, CLIPVisionModelWithProjection)

from models.apm import APMConfig
from models.cam import CAMConfig, EncodedFrames
from models.clip_image import clip_pixel_values
from models.conc_cond import ConcCondUNet
from models.errors import require
from models.guidance import GuidanceWeights, multi_conditioned_cfg, text_cfg
from models.latent_video import LatentVideoModel, StepCallback, load_geometry
from models.presets import ModelPreset, VideoConfig, get_preset
from models.schedule import VIDEO_LDM_SCHEDULE, NoiseSchedule
from models.seeding import randn
from models.streaming_unet import StreamingT2VUNet
from models.token_chunks import chunk_feed_forwards
from models.video_ldm import VideoLDM, unet_factor


@dataclass(frozen=True)
class ConditionReplacement:
    """The replacement method of Ho et al. 2022 (Video Diffusion Models, Sec. 3.1) on top of CAM,
    beyond the paper: before every noise prediction, the chunk's first F_cond noisy latents (the
    frames that re-cover the condition) are replaced by the conditioning latents noised to that
    step's t, x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps (Table 12's schedule), with one eps per
    chunk drawn from ``generators``. The new frames are then denoised next to the condition's own
    noisy latents, not next to the model's re-cover of them.

    latents: (b, c, F_cond, h, w), the previous chunk's last F_cond latents; generators: one per
    video, a stream of its own so that the chunk's other noise is what it is without replacement.
    """

    latents: torch.Tensor
    generators: list[torch.Generator]

    def pinned(self, noise_fn, scheduler, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype):
        """``noise_fn`` evaluated on x_t (of ``shape``) with its first F_cond frames replaced."""
        z = self.latents.to(device, dtype)
        k = z.shape[2]
        require(tuple(z.shape[:2]) == tuple(shape[:2]) and tuple(z.shape[3:]) == tuple(shape[3:]) and shape[2] > k,
                "replacement.latents", tuple(z.shape), f"the first frames of the chunk's latents {tuple(shape)}")
        require(len(self.generators) == z.shape[0], "replacement.generators", len(self.generators),
                f"one per video ({z.shape[0]})")
        eps = torch.cat([randn((1, *z.shape[1:]), g, device, dtype) for g in self.generators])

        def pinned_noise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            x[:, :, :k] = scheduler.add_noise(z, eps, t.reshape(1).to(device))
            return noise_fn(x, t)

        return pinned_noise


class StreamingT2V(LatentVideoModel):
    """The autoregressive-extend model."""

    def __init__(self, unet: StreamingT2VUNet | ConcCondUNet, vae: AutoencoderKL, text_encoder: CLIPTextModel,
                 tokenizer: CLIPTokenizer | None, image_encoder: CLIPVisionModelWithProjection,
                 video: VideoConfig, schedule: NoiseSchedule = VIDEO_LDM_SCHEDULE) -> None:
        super().__init__(vae, text_encoder, tokenizer, video, schedule, latent_factor=unet_factor(unet.unet))
        self.unet = chunk_feed_forwards(unet)
        self.image_encoder = image_encoder
        require(1 <= unet.cond_frames < video.frames_per_chunk, "cam.cond_frames", unet.cond_frames,
                f"an integer in [1, {video.frames_per_chunk - 1}] (F_cond < F = {video.frames_per_chunk})")
        if isinstance(unet, StreamingT2VUNet):
            cam = unet.cam.config
            require(cam.downsampling_factor == self.vae_scale, "cam.frame_encoder_channels",
                    cam.frame_encoder_channels,
                    f"{self.vae_scale.bit_length()} widths (E_cond must downsample x{self.vae_scale} like the VAE)")
            require(unet.apm.config.image_embed_dim == image_encoder.config.projection_dim, "apm.image_embed_dim",
                    unet.apm.config.image_embed_dim, f"the image encoder's projection_dim "
                    f"({image_encoder.config.projection_dim})")
            if cam.control_text == "empty":
                with torch.no_grad():
                    unet.cam.set_empty_text(self.encode_prompt([""]))

    @property
    def has_apm(self) -> bool:
        return isinstance(self.unet, StreamingT2VUNet)

    def condition(self, cond_frames: torch.Tensor) -> torch.Tensor | EncodedFrames:
        """What the denoiser takes as the chunk condition, computed once per chunk: CAM's
        E_cond features of the frames (they do not depend on x_t, so every step reuses them), or
        the frames' VAE latents (the Conc-Cond baseline)."""
        cond = cond_frames.to(self.device, self.dtype)
        if getattr(self.unet, "conditions_on_latents", False):
            return self.encode(cond)
        return self.unet.cam.encode_frames(cond)

    @property
    def cond_frames(self) -> int:
        return self.unet.cond_frames

    # -- APM: anchor embedding ----------------------------------------------------------------
    @torch.no_grad()
    def anchor_embeds(self, frames: torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings (b, e) of anchor frames (b, 3, H, W) in [-1, 1]: resized to the
        encoder's input size (bicubic, antialiased) and CLIP-normalised."""
        pixels = clip_pixel_values(frames, self.image_encoder.config.image_size)
        pixels = pixels.to(self.image_encoder.device, self.image_encoder.dtype)
        return self.image_encoder(pixel_values=pixels).image_embeds.to(self.dtype)

    def null_anchor_embeds(self, batch: int) -> torch.Tensor:
        """a_null of Eq. 13: the embedding of an all-zero frame (zeros in the [-1, 1] frame
        convention, as the reference implementation encodes it)."""
        return self.anchor_embeds(torch.zeros(batch, 3, self.video.height, self.video.width, device=self.device))

    # -- Eq. 13 -------------------------------------------------------------------------------
    def guided_noise(self, x: torch.Tensor, t: torch.Tensor, text_null: torch.Tensor, text: torch.Tensor,
                     anchor_null: torch.Tensor, anchor: torch.Tensor, cond_frames: torch.Tensor | EncodedFrames,
                     weights: GuidanceWeights) -> torch.Tensor:
        """eps_hat of Eq. 13 from one batched UNet call over the branches
        (tau_null, a_null), (tau, a_null), (tau, a). When omega_text == omega_anchor the middle
        branch cancels out of Eq. 13 and is not computed (see GuidanceWeights.anchor_branch_cancels)."""
        if weights.anchor_branch_cancels:
            eps_null, eps_full = self.unet(torch.cat([x, x]), t, torch.cat([text_null, text]),
                                           torch.cat([anchor_null, anchor]), repeat_condition(cond_frames, 2)).chunk(2)
            return eps_null + weights.text * (eps_full - eps_null)
        eps_null, eps_text, eps_full = self.unet(
            torch.cat([x, x, x]), t, torch.cat([text_null, text, text]),
            torch.cat([anchor_null, anchor_null, anchor]), repeat_condition(cond_frames, 3)).chunk(3)
        return multi_conditioned_cfg(eps_null, eps_text, eps_full, weights)

    @torch.no_grad()
    def sample_chunk(self, prompts: list[str], anchor_frames: torch.Tensor | None, cond_frames: torch.Tensor,
                     generators: list[torch.Generator], weights: GuidanceWeights = GuidanceWeights(),
                     negative_prompts: list[str] | None = None, num_inference_steps: int | None = None,
                     on_step: StepCallback | None = None,
                     replacement: ConditionReplacement | None = None) -> torch.Tensor:
        """Latents (b, c, F, h, w) of the next chunk.

        anchor_frames: (b, 3, H, W), the APM anchor, or None to switch APM off (the "w/o APM"
        ablation: text guidance only); cond_frames: (b, 3, F_cond, H, W), the last F_cond frames
        of the video so far, both in [-1, 1]. ``replacement`` (beyond the paper, off by default)
        pins the chunk's first F_cond noisy latents to the conditioning latents noised to each
        step's t (:class:`ConditionReplacement`).
        """
        b = len(prompts)
        require(cond_frames.shape[2] == self.cond_frames, "cond_frames", tuple(cond_frames.shape),
                f"{self.cond_frames} frames on axis 2")
        text = self.encode_prompt(list(negative_prompts or [""] * b) + list(prompts))
        text_null, text_pos = text.chunk(2)
        cond = self.condition(cond_frames)
        require(anchor_frames is None or self.has_apm, "apm", True, "False for a model without APM (Conc-Cond)")
        if anchor_frames is None:
            def noise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                eps_null, eps_text = self.unet(torch.cat([x, x]), t, text, None, repeat_condition(cond, 2)).chunk(2)
                return text_cfg(eps_null, eps_text, weights.text)
        else:
            anchor = self.anchor_embeds(anchor_frames)
            anchor_null = self.null_anchor_embeds(b)

            def noise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return self.guided_noise(x, t, text_null, text_pos, anchor_null, anchor, cond, weights)

        shape = self.latent_shape(b, self.video.frames_per_chunk)
        if replacement is not None:
            noise = replacement.pinned(noise, self.schedule.make_scheduler(), shape, self.device, self.dtype)
        return self.ddim_sample(noise, shape, generators, num_inference_steps, on_step)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_video_ldm(cls, base: VideoLDM, image_encoder: CLIPVisionModelWithProjection, cam: CAMConfig,
                       apm: APMConfig) -> "StreamingT2V":
        """StreamingT2V at the start of training: the Video-LDM's weights, CAM's control branch
        copied from its encoder, every new output projection / alpha_l at zero."""
        unet = StreamingT2VUNet.from_base(base.unet, cam, apm).eval()
        return cls(unet, base.vae, base.text_encoder, base.tokenizer, image_encoder.eval(), base.video, base.schedule)

    @classmethod
    def from_preset(cls, preset: str | ModelPreset, seed: int = 0,
                    device: str | torch.device = "cpu") -> "StreamingT2V":
        """Random weights from a preset (tests, benchmarks, the ``tiny`` default, ``meta`` shape checks)."""
        preset = get_preset(preset) if isinstance(preset, str) else preset
        base = VideoLDM.from_preset(preset, seed=seed, device=device)
        with torch.device(device):
            image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**preset.image_encoder))
        return cls.from_video_ldm(base, image_encoder, preset.cam, preset.apm)

    @classmethod
    def from_pretrained(cls, path: str | Path, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device = "cpu") -> "StreamingT2V":
        """Load weights written by :meth:`save_pretrained` (or by the official-checkpoint converter)."""
        path = str(path)
        video, schedule = load_geometry(path, VideoConfig(), VIDEO_LDM_SCHEDULE)
        unet_class = ConcCondUNet if _unet_class_name(path) == ConcCondUNet.__name__ else StreamingT2VUNet
        unet = unet_class.from_pretrained(path, subfolder="unet", torch_dtype=torch_dtype)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=torch_dtype)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", dtype=torch_dtype)
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(path, subfolder="image_encoder",
                                                                      dtype=torch_dtype)
        model = cls(unet.eval(), vae.eval(), text_encoder.eval(), tokenizer, image_encoder.eval(), video, schedule)
        return model.to(device)

    def parts(self) -> tuple[torch.nn.Module, ...]:
        return (*super().parts(), self.unet, self.image_encoder)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.unet.save_pretrained(path / "unet")
        self.image_encoder.save_pretrained(path / "image_encoder")
        self._save_common(path)

    def config_summary(self) -> dict:
        if not self.has_apm:
            return {"conditioning": "conc-cond", "cond_frames": self.cond_frames, "video": asdict(self.video)}
        return {"cam": asdict(self.unet.cam.config), "apm": asdict(self.unet.apm.config), "video": asdict(self.video)}


def repeat_condition(cond: torch.Tensor | EncodedFrames, n: int) -> torch.Tensor | EncodedFrames:
    """The condition of ``n`` stacked copies of a batch (the guidance branches)."""
    return cond.repeat(n) if isinstance(cond, EncodedFrames) else torch.cat([cond] * n)


def conditioning_of(path: str | Path) -> str | None:
    """'cam' or 'conc-cond': how a saved StreamingT2V directory conditions on the previous chunk
    (None if ``path`` holds no readable UNet config, or a plain Video-LDM's)."""
    return {StreamingT2VUNet.__name__: "cam", ConcCondUNet.__name__: "conc-cond"}.get(_unet_class_name(str(path)))


def _unet_class_name(path: str) -> str | None:
    """The denoiser class recorded in ``unet/config.json`` (CAM model or Conc-Cond baseline)."""
    try:
        config = StreamingT2VUNet.load_config(path, subfolder="unet")
    except (OSError, ValueError):
        return None
    return config.get("_class_name")

"""What each training stage optimises, and which parameters it may touch (paper Sec. 5.1, App. E.1).

Stages, in the order a model is built:

* ``vae``: the frame autoencoder (only for a Video-LDM trained from scratch, e.g. the toy world).
* ``base``: the Video-LDM UNet (text-to-16-frames, epsilon loss, 10% empty-text dropout for
  classifier-free guidance); the text encoder is trained with it only when asked (toy world).
* ``cam``: StreamingT2V stage 1. The Video-LDM is frozen; CAM's new layers (E_cond, the
  ControlNet-like encoder copy, the skip mergers) are trained on 16-frame clips: the first
  F_cond frames condition, all F frames are denoised (the chunk re-covers its condition, as at
  inference). Text is dropped to empty 5% of the time. Beyond the paper, ``main_branch``
  (:data:`MAIN_BRANCH_MODES`) also trains the main branch's spatial layers (as stage 2 does) or
  all of it (as Conc-Cond does), for a comparison of the two conditionings at equal trainable
  parameters. The stage starts from a Video-LDM, or from a CAM model whose CAM it continues.
* ``cam_apm``: stage 2. CLIP (text and image towers) and the main branch's temporal layers are
  frozen; the rest (main-branch spatial layers, CAM, APM) is trained on 32-frame clips: the
  anchor is a random frame of 1-16, frames 17-24 condition, frames 17-32 are denoised; text
  -> empty 5%, anchor -> zero image 5%, both 5% (the nulls of Eq. 13). Beyond the paper,
  ``apm_only`` trains APM alone (its gates alpha_l, resampler and mixer) with everything else
  frozen: a warm-up that lets the gates open before the main branch adapts (see
  :func:`check_apm_only`).
* ``conc_cond``: the Conc-Cond baseline (App. D.1) on the same 16-frame task as ``cam``; the
  whole UNet is fine-tuned (it must learn to read its new input channels).
* ``clip``: the CLIP model whose image tower embeds APM's anchor (only where no released CLIP
  fits, e.g. the toy world): CLIP's contrastive loss between one random frame of each clip (the
  anchor range 1..F) and the clip's caption, both towers trained from the start.
* ``refiner``: the high-resolution video model of the refinement stage (paper: MS-Vid2Vid-XL),
  i.e. the ``base`` objective on clips at the refinement geometry (the canvas and the 24-frame
  chunk of Sec. 4.3), starting from a trained Video-LDM.

How a training step noises its latents is a :class:`NoiseDraw`. The paper's is the default:
uniform timesteps and white Gaussian noise. A run may ask for ``cubic`` timesteps
(:func:`sample_timesteps`), which spend most steps at high noise, where a condition branch
such as CAM matters most, and for offset noise (:func:`draw_noise`), which hides a clip's mean
colour from the noisy latent so that a condition branch has to carry it.

Every objective returns the loss of one batch of frames (b, 3, F, H, W) in [-1, 1] with captions;
randomness (timesteps, noise, dropout, anchor choice) comes from the generator it is given, so a
step is a pure function of (weights, batch, generator state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from models.clip_image import CLIPPair
from models.conc_cond import ConcCondUNet
from models.errors import require
from models.params import param
from models.refinement import RefineConfig, to_canvas
from models.schedule import NoiseSchedule
from models.streaming_t2v import StreamingT2V
from models.video_ldm import VideoLDM

Stage = Literal["vae", "base", "cam", "cam_apm", "conc_cond", "refiner", "clip"]
STAGES: tuple[str, ...] = ("vae", "base", "cam", "cam_apm", "conc_cond", "refiner", "clip")
CONDITIONED_STAGES: tuple[str, ...] = ("cam", "cam_apm", "conc_cond")  # a chunk condition (StreamingObjective)
# What stage ``cam`` trains of the main branch (the Video-LDM UNet) besides CAM: nothing (the
# paper's stage 1), its spatial layers (what stage 2 trains), or all of it (what Conc-Cond trains).
MAIN_BRANCH_MODES: tuple[str, ...] = ("frozen", "spatial", "all")


@dataclass(frozen=True)
class Dropout:
    """Condition dropout probabilities (paper: 5% / 5% / 5% for stage 2)."""

    text: float = param(0.05, help="the share of samples trained with the empty prompt only (paper: 5%)",
                        ge=0, le=1)
    anchor: float = param(0.05, help="stage cam_apm: the share trained with a zero anchor image only (paper: 5%)",
                          ge=0, le=1)
    both: float = param(0.05, help="stage cam_apm: the share trained with both conditions dropped (paper: 5%)",
                        ge=0, le=1)

    def __post_init__(self) -> None:
        for name in ("text", "anchor", "both"):
            value = getattr(self, name)
            require(0 <= value <= 1, f"dropout.{name}", value, "a probability in [0, 1]")
        require(self.text + self.anchor + self.both <= 1, "dropout", self, "probabilities summing to at most 1")

    def draw(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample masks (drop_text, drop_anchor): one uniform draw decides text only, anchor
        only, both, or neither, so the three events are disjoint with the stated rates."""
        u = torch.rand(batch, generator=generator)
        text_only = u < self.text
        anchor_only = (u >= self.text) & (u < self.text + self.anchor)
        both = (u >= self.text + self.anchor) & (u < self.text + self.anchor + self.both)
        return text_only | both, anchor_only | both


def clip_frames(stage: str, frames_per_chunk: int) -> int:
    """Frames per training clip: 2F for stage 2 (anchor part + chunk), else F."""
    return 2 * frames_per_chunk if stage == "cam_apm" else frames_per_chunk


TIMESTEP_SAMPLING: tuple[str, ...] = ("uniform", "cubic")


def sample_timesteps(batch: int, num_train_timesteps: int, sampling: str,
                     generator: torch.Generator) -> torch.Tensor:
    """Training timesteps, one per sample.

    ``uniform``: t ~ U{0..T-1}, the paper's (and LDM's) choice. ``cubic``: t = floor((1 - u^3) T)
    with u ~ U(0, 1), the biased sampling T2I-Adapter (Mou et al. 2023, Sec. 3.4) uses to train
    a condition branch: the early, high-noise steps decide a sample's layout and colours, which
    is what a condition has to carry; P(t >= T/2) is 7/8 instead of 1/2.
    """
    require(sampling in TIMESTEP_SAMPLING, "timestep_sampling", sampling, f"one of {TIMESTEP_SAMPLING}")
    if sampling == "uniform":
        return torch.randint(0, num_train_timesteps, (batch,), generator=generator)
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return ((1 - u**3) * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)


@dataclass(frozen=True)
class NoiseDraw:
    """How a training step draws t and eps. The defaults are the paper's (uniform t, white eps)."""

    timestep_sampling: str = "uniform"  # or 'cubic' (:func:`sample_timesteps`)
    offset_noise: float = 0.0  # std of the per-(video, channel) offset added to eps (:func:`draw_noise`)

    def __post_init__(self) -> None:
        require(self.timestep_sampling in TIMESTEP_SAMPLING, "timestep_sampling", self.timestep_sampling,
                f"one of {TIMESTEP_SAMPLING}")
        require(math.isfinite(self.offset_noise) and 0 <= self.offset_noise <= 1, "offset_noise",
                self.offset_noise, "a standard deviation in [0, 1] (0: the paper's white noise)")


def draw_noise(shape: torch.Size, offset_noise: float, generator: torch.Generator) -> torch.Tensor:
    """eps ~ N(0, I), plus, when ``offset_noise`` s > 0, s * N(0, 1) per (video, channel), the same
    for all frames and pixels ("offset noise", Guttenberg 2023).

    Why: the schedule of Table 12 does not reach zero SNR. At t = 999, sqrt(abar) ~ 0.07 of a
    clip's mean latent colour survives in x_t, while white noise averaged over a chunk's F*h*w
    positions shrinks by sqrt(F*h*w) (to 1/128 for 16 frames of 32x32). So a model can read the
    mean colour off x_t and never learns to take it from its condition. At sampling, x_T holds
    no such signal and every extension chunk comes out in the average colour. The offset hides
    the mean. With s = 0 nothing more is drawn: the generator stream is the paper's.
    """
    eps = torch.randn(shape, generator=generator, dtype=torch.float32)
    if offset_noise > 0:
        eps = eps + offset_noise * torch.randn((*shape[:2],) + (1,) * (len(shape) - 2), generator=generator)
    return eps


def noise_and_target(schedule: NoiseSchedule, latents: torch.Tensor, generator: torch.Generator,
                     draw: NoiseDraw = NoiseDraw()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with t and eps drawn as ``draw`` says; the
    epsilon-parametrisation's target is eps (Table 12)."""
    scheduler = schedule.make_scheduler()
    b = latents.shape[0]
    t = sample_timesteps(b, schedule.num_train_timesteps, draw.timestep_sampling, generator)
    eps = draw_noise(latents.shape, draw.offset_noise, generator).to(latents.device, latents.dtype)
    noisy = scheduler.add_noise(latents, eps, t.to(latents.device))
    require(schedule.prediction_type == "epsilon", "prediction_type", schedule.prediction_type, "'epsilon'")
    return noisy, t.to(latents.device), eps


class Objective:
    """One stage's loss over the modules it trains; ``modules`` are everything it saves."""

    stage: str

    def trainable_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def loss(self, frames: torch.Tensor, captions: list[str], generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def freeze_all_but_trainable(self) -> None:
        trainable = {id(p) for p in self.trainable_parameters()}
        for module in self.modules().values():
            for p in module.parameters():
                p.requires_grad_(id(p) in trainable)
            module.train()


class VAEObjective(Objective):
    """Reconstruction (L1 + MSE) plus a small KL term, frame by frame (LDM's autoencoder loss
    without its perceptual and adversarial parts)."""

    stage = "vae"

    def __init__(self, model: VideoLDM, kl_weight: float = 1e-6) -> None:
        self.model = model
        self.kl_weight = kl_weight

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.model.vae}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.model.vae.parameters())

    def loss(self, frames: torch.Tensor, captions: list[str], generator: torch.Generator) -> torch.Tensor:
        x = frames.transpose(1, 2).flatten(0, 1).to(self.model.device)  # (b*F, 3, H, W)
        posterior = self.model.vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(x.device)
        recon = self.model.vae.decode(z).sample
        kl = posterior.kl().mean() / x[0].numel()
        return F.l1_loss(recon, x) + F.mse_loss(recon, x) + self.kl_weight * kl

    @torch.no_grad()
    def calibrate_scaling(self, frames: torch.Tensor) -> float:
        """LDM's scaling factor 1 / std(z) on sample frames, so latents have unit variance."""
        x = frames.transpose(1, 2).flatten(0, 1).to(self.model.device)
        z = self.model.vae.encode(x).latent_dist.mode()
        factor = float(1.0 / z.float().std())
        self.model.vae.register_to_config(scaling_factor=factor)
        return factor


class BaseObjective(Objective):
    """Video-LDM epsilon loss on F-frame clips with empty-text dropout (also the ``refiner``
    stage, on its larger clips)."""

    def __init__(self, model: VideoLDM, train_text_encoder: bool = False, text_dropout: float = 0.1,
                 stage: str = "base", noise: NoiseDraw = NoiseDraw()) -> None:
        self.stage = stage
        self.model = model
        self.train_text_encoder = train_text_encoder
        self.text_dropout = text_dropout
        self.noise = noise

    def modules(self) -> dict[str, nn.Module]:
        return {"unet": self.model.unet, "text_encoder": self.model.text_encoder, "vae": self.model.vae}

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = list(self.model.unet.parameters())
        return params + list(self.model.text_encoder.parameters()) if self.train_text_encoder else params

    def loss(self, frames: torch.Tensor, captions: list[str], generator: torch.Generator) -> torch.Tensor:
        m = self.model
        drop = torch.rand(len(captions), generator=generator) < self.text_dropout
        text = _encode_text(m, [("" if d else c) for c, d in zip(captions, drop.tolist())], self.train_text_encoder)
        latents = m.encode(frames.to(m.device))
        noisy, t, eps = noise_and_target(m.schedule, latents, generator, self.noise)
        return F.mse_loss(m.unet(noisy, t, text).sample.float(), eps.float())


class UpscaledInputObjective(BaseObjective):
    """The refiner trained for the input refinement gives it (Sec. 4.3, beyond the paper's
    training): the low-resolution video, upscaled and noised to T'.

    Each clip is reduced to the low-resolution size (area), passed through the VAE (as the
    low-resolution video is decoded from latents) and put on the refinement canvas by
    :func:`models.refinement.to_canvas` (as refinement does): z_up. With t uniform in [1, T'],
    x_t noises a mix of z_up and the clip's own latents z,
    x_t = sqrt(abar_t) (l z_up + (1 - l) z) + sqrt(1 - abar_t) eps, and the target is the noise
    that leads from x_t to the clip, (x_t - sqrt(abar_t) z) / sqrt(1 - abar_t). The share l of
    z_up is t / T' for half the clips (at T' exactly what refinement gives the model, then less
    as t falls) and uniform in [0, t / T'] for the others (what its own earlier steps make once
    they have sharpened the video).
    """

    def __init__(self, model: VideoLDM, low_res: tuple[int, int], refine: RefineConfig, text_dropout: float = 0.1,
                 noise: NoiseDraw = NoiseDraw()) -> None:
        super().__init__(model, stage="refiner", text_dropout=text_dropout, noise=noise)
        self.low_res = low_res
        self.refine = refine
        self.noise_level = refine.noise_level

    @torch.no_grad()
    def upscaled(self, frames: torch.Tensor) -> torch.Tensor:
        """(b, 3, F, H, W) canvas frames -> the same reduced to the low-res size, decoded from
        their latents, and put back on the canvas as refinement puts a low-res video."""
        m, b = self.model, frames.shape[0]
        flat = rearrange(frames, "b c f h w -> (b f) c h w")
        small = rearrange(F.interpolate(flat, size=self.low_res, mode="area"), "(b f) c h w -> b c f h w", b=b)
        return to_canvas(m.decode(m.encode(small)), self.refine)

    def loss(self, frames: torch.Tensor, captions: list[str], generator: torch.Generator) -> torch.Tensor:
        m = self.model
        drop = torch.rand(len(captions), generator=generator) < self.text_dropout
        text = _encode_text(m, [("" if d else c) for c, d in zip(captions, drop.tolist())], self.train_text_encoder)
        frames = frames.to(m.device)
        clean, upscaled = m.encode(frames), m.encode(self.upscaled(frames))
        t = torch.randint(1, self.noise_level + 1, (len(captions),), generator=generator)
        scale = torch.where(torch.rand(len(captions), generator=generator) < 0.5, 1.0,
                            torch.rand(len(captions), generator=generator))
        share = (t.float() / self.noise_level * scale).view(-1, 1, 1, 1, 1).to(clean)
        eps = draw_noise(clean.shape, self.noise.offset_noise, generator).to(clean)
        abar = m.schedule.make_scheduler().alphas_cumprod.to(clean)[t].view(-1, 1, 1, 1, 1)
        noisy = abar.sqrt() * (share * upscaled + (1 - share) * clean) + (1 - abar).sqrt() * eps
        target = (noisy - abar.sqrt() * clean) / (1 - abar).sqrt()
        return F.mse_loss(m.unet(noisy, t.to(m.device), text).sample.float(), target.float())


def _encode_text(model, captions: list[str], with_grad: bool) -> torch.Tensor:
    if with_grad:
        ids = model.tokenizer(captions, padding="max_length", max_length=model.text_encoder.config.max_position_embeddings,
                              truncation=True, return_tensors="pt").input_ids
        return model.text_encoder(ids.to(model.text_encoder.device))[0]
    return model.encode_prompt(captions)


def _main_temporal_parameters(model: StreamingT2V) -> set[int]:
    """The main branch's temporal layers: the first temporal transformer, every temporal
    convolution and every temporal transformer of the Video-LDM UNet."""
    unet = model.unet.unet
    ids = {id(p) for p in unet.transformer_in.parameters()}
    for name, module in unet.named_modules():
        if name.split(".")[-1] in ("temp_convs", "temp_attentions"):
            ids |= {id(p) for p in module.parameters()}
    return ids


def check_main_branch(main_branch: str, stage: str) -> None:
    require(main_branch in MAIN_BRANCH_MODES, "main_branch", main_branch, f"one of {MAIN_BRANCH_MODES}")
    require(main_branch == "frozen" or stage == "cam", "main_branch", main_branch,
            "'frozen' outside stage 'cam' (stage cam_apm trains the spatial layers, conc_cond all of the UNet)")


def check_apm_only(apm_only: bool, stage: str) -> None:
    """``apm_only`` trains APM alone, only in stage ``cam_apm`` (beyond the paper).

    Why: in a full stage 2 the gates alpha_l start at 0, so SiLU(alpha_l) ~ 0 scales the
    gradient reaching the resampler and mixer to ~0 (Eq. 6), and the main branch's spatial
    layers, trained alongside, can learn to do without the anchor before the gates get a
    consistent gradient. Trained alone on drifted conditions (``condition_noise``), the gates
    get one; a full stage 2 can follow (docs/training.md).
    """
    require(not apm_only or stage == "cam_apm", "apm_only", apm_only,
            "False outside stage 'cam_apm' (the stage that trains APM)")


def check_condition_noise(condition_noise: float, decoded_condition: bool) -> None:
    require(math.isfinite(condition_noise) and 0 <= condition_noise <= 1, "condition_noise", condition_noise,
            "a largest standard deviation in [0, 1] (0: the paper's clean condition)")
    require(condition_noise == 0 or decoded_condition, "condition_noise", condition_noise,
            "0 unless decoded_condition is on (it degrades the latents the condition is decoded from)")


def degrade_condition(latents: torch.Tensor, smax: float, generator: torch.Generator) -> torch.Tensor:
    """The conditioning latents plus N(0, s^2) noise, s ~ U(0, smax) drawn once per clip (beyond
    the paper, like offset noise).

    Why: in the paper's stage-2 task the conditioning frames 17-24 already show the anchor's
    scene, so the anchor adds nothing the condition does not carry, and APM's gates alpha_l get
    no consistent gradient and stay at their zero init. At sampling the condition is the model's
    own last chunk, which drifts from the anchor over hundreds of frames; a degraded condition is a stand-in for that drift, where
    the anchor is what tells the model the scene's appearance. s ~ U(0, smax) keeps clean
    conditions (s near 0) in the mix, the ones sampling's first extensions see. An LDM VAE's
    latents have unit variance after its scaling factor, so smax is relative to the signal.
    """
    b = latents.shape[0]
    s = smax * torch.rand(b, generator=generator).view(b, *(1,) * (latents.dim() - 1))
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    return latents + (s * noise).to(latents.device, latents.dtype)


class StreamingObjective(Objective):
    """Stage 1 (``cam``), stage 2 (``cam_apm``) and the Conc-Cond baseline (``conc_cond``)."""

    def __init__(self, model: StreamingT2V, stage: str, dropout: Dropout = Dropout(),
                 noise: NoiseDraw = NoiseDraw(), decoded_condition: bool = False,
                 condition_noise: float = 0.0, main_branch: str = "frozen", apm_only: bool = False) -> None:
        require(stage in CONDITIONED_STAGES, "stage", stage, f"one of {CONDITIONED_STAGES}")
        check_condition_noise(condition_noise, decoded_condition)
        check_main_branch(main_branch, stage)
        check_apm_only(apm_only, stage)
        require((stage == "conc_cond") == isinstance(model.unet, ConcCondUNet), "stage", stage,
                "'conc_cond' exactly when the model is the Conc-Cond baseline")
        self.model = model
        self.stage = stage
        self.dropout = dropout if stage == "cam_apm" else Dropout(text=dropout.text, anchor=0.0, both=0.0)
        self.noise = noise
        self.decoded_condition = decoded_condition
        self.condition_noise = condition_noise
        self.main_branch = main_branch
        self.apm_only = apm_only

    def condition(self, frames: torch.Tensor, latents: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """The chunk condition of a training clip: its first F_cond frames (CAM) or their latents
        (Conc-Cond). With ``decoded_condition``, what sampling gives the model instead: frames
        decoded from latents (sampling decodes the previous chunk's latents, and Conc-Cond
        re-encodes those frames). The target stays the clip's latents, so the model learns to
        re-cover the latents its condition was decoded from, which at sampling are the previous
        chunk's own; trained on the clip's frames it re-covers encode(decode(z)) instead, one VAE
        round trip away.

        With ``condition_noise`` > 0 the latents are first degraded (:func:`degrade_condition`,
        drawn from ``generator``), while the target stays the clip's own."""
        k = self.model.cond_frames
        if not self.decoded_condition:
            return latents[:, :, :k] if self.stage == "conc_cond" else frames[:, :, :k]
        z = latents[:, :, :k]
        if self.condition_noise > 0:
            require(generator is not None, "generator", None, "the step's generator (condition_noise > 0 draws)")
            z = degrade_condition(z, self.condition_noise, generator)
        decoded = self.model.decode(z).to(frames.dtype)
        return self.model.encode(decoded) if self.stage == "conc_cond" else decoded

    def modules(self) -> dict[str, nn.Module]:
        m = self.model
        return {"unet": m.unet, "image_encoder": m.image_encoder, "text_encoder": m.text_encoder, "vae": m.vae}

    def trainable_parameters(self) -> list[nn.Parameter]:
        unet = self.model.unet
        if self.stage == "conc_cond":
            return list(unet.parameters())
        if self.apm_only:
            return list(unet.apm_parameters())
        if self.stage == "cam_apm":
            frozen = _main_temporal_parameters(self.model)
            return [p for p in unet.parameters() if id(p) not in frozen]
        if self.main_branch == "frozen":  # the paper's stage 1
            return list(unet.cam.parameters())
        kept = {id(p) for p in unet.apm_parameters()}  # stage 1 has no anchor: APM stays as initialised
        if self.main_branch == "spatial":
            kept |= _main_temporal_parameters(self.model)
        return list(unet.cam.parameters()) + [p for p in unet.unet.parameters() if id(p) not in kept]

    def loss(self, frames: torch.Tensor, captions: list[str], generator: torch.Generator) -> torch.Tensor:
        m = self.model
        f = m.video.frames_per_chunk
        frames = frames.to(m.device, m.dtype)
        b = frames.shape[0]
        drop_text, drop_anchor = self.dropout.draw(b, generator)
        text = m.encode_prompt([("" if d else c) for c, d in zip(captions, drop_text.tolist())])
        image = None
        if self.stage == "cam_apm":
            require(frames.shape[2] == 2 * f, "clip_frames", frames.shape[2], f"{2 * f} for stage cam_apm")
            pick = torch.randint(0, f, (b,), generator=generator)
            anchor = frames[torch.arange(b), :, pick]  # a random frame of 1..F
            anchor = torch.where(drop_anchor.view(b, 1, 1, 1).to(anchor.device), torch.zeros_like(anchor), anchor)
            image = m.anchor_embeds(anchor)
            frames = frames[:, :, f:]  # frames F+1..2F are the chunk; F+1..F+F_cond condition it
        latents = m.encode(frames)
        noisy, t, eps = noise_and_target(m.schedule, latents, generator, self.noise)
        return F.mse_loss(m.unet(noisy, t, text, image, self.condition(frames, latents, generator)).float(),
                          eps.float())


class CLIPObjective(Objective):
    """CLIP's symmetric contrastive loss (Radford et al. 2021) between one frame of each clip,
    drawn uniformly from its F frames as stage 2 draws the anchor, and the clip's caption."""

    stage = "clip"

    def __init__(self, model: CLIPPair) -> None:
        self.model = model

    def modules(self) -> dict[str, nn.Module]:
        return {"clip": self.model.model}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.model.model.parameters())

    def loss(self, frames: torch.Tensor, captions: list[str], generator: torch.Generator) -> torch.Tensor:
        b = frames.shape[0]
        pick = torch.randint(0, frames.shape[2], (b,), generator=generator)
        return self.model.contrastive_loss(frames[torch.arange(b), :, pick], captions)


def make_objective(stage: str, model: VideoLDM | StreamingT2V | CLIPPair, train_text_encoder: bool = False,
                   dropout: Dropout = Dropout(), noise: NoiseDraw = NoiseDraw(),
                   decoded_condition: bool = False, condition_noise: float = 0.0,
                   main_branch: str = "frozen", apm_only: bool = False,
                   upscaled_input: tuple[tuple[int, int], RefineConfig] | None = None) -> Objective:
    """The stage's objective. ``upscaled_input`` (stage refiner): the low-res size and the
    refinement config of :class:`UpscaledInputObjective`; None trains the refiner as a plain
    Video-LDM."""
    require(stage in STAGES, "stage", stage, f"one of {STAGES}")
    if stage == "vae":
        return VAEObjective(model)
    if stage == "clip":
        return CLIPObjective(model)
    if stage == "refiner" and upscaled_input is not None:
        return UpscaledInputObjective(model, *upscaled_input, noise=noise)
    if stage in ("base", "refiner"):
        return BaseObjective(model, train_text_encoder, stage=stage, noise=noise)
    return StreamingObjective(model, stage, dropout, noise, decoded_condition, condition_noise, main_branch,
                              apm_only)

"""A training run: config, the model a stage starts from, optimiser steps, checkpoints, export.

Everything here is plain PyTorch and runs in-process; :mod:`training.ray_train` runs the same
:class:`TrainingRun` inside Ray Train workers. A checkpoint holds the trainable parameters, the
optimiser state, the step and the generator state, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from infra import storage
from models.cam import CONTROL_TEXTS
from models.clip_image import CLIPPair, load_image_encoder
from models.conc_cond import ConcCondUNet
from models.errors import ConfigError, require
from models.params import build, check, flatten, group, param
from models.presets import PRESETS, REFINE_GEOMETRY, get_preset
from models.refinement import RefineConfig
from models.streaming_t2v import StreamingT2V, conditioning_of
from models.tokenizer import extend_vocabulary
from models.video_ldm import VideoLDM
from training.data import TOYWORLD, ClipSource, ClipSpec, local_batches
from training.objectives import (CONDITIONED_STAGES, MAIN_BRANCH_MODES, STAGES, TIMESTEP_SAMPLING, Dropout, NoiseDraw,
                                 Objective, check_apm_only, check_condition_noise, check_main_branch, clip_frames,
                                 make_objective)

PRECISIONS = ("no", "bf16", "fp16")
TOKENIZERS = (None, "toyworld")  # None: the init model's (or the preset's) tokenizer
STATE_FILE = "training_state.json"
MASTER_DTYPE = torch.float32
"""The weights training updates, whatever the init directory stores (the shipped toy-world model
and converted official checkpoints are float16); ``--mixed-precision`` autocasts the compute."""


@dataclass(frozen=True)
class BeyondPaper:
    """The training options the paper does not have. Each default is the paper's method, so a
    config that sets none of them trains as the paper does; docs/training.md gives their rationale."""

    warmup_steps: int = param(0, help="linear lr warmup over the first N steps (paper: 0, a constant lr)", ge=0)
    decay_steps: int = param(0, help="linear lr decay over the last N steps (paper: 0); added to a constant-lr run, "
                             "a re-run resumes into the decay", ge=0, note="and at most steps - warmup_steps")
    train_text_encoder: bool = param(False, help="stage base: train CLIP's text encoder with the UNet, for a model "
                                     "trained from scratch (paper: CLIP frozen)")
    tokenizer: str | None = param(None, help="stage base with train_text_encoder: 'toyworld' gives each toy-world "
                                  "word one token (default: the init model's tokenizer)", choices=TOKENIZERS[1:])
    timestep_sampling: str = param("uniform", help="how training timesteps are drawn: uniform (paper) or cubic "
                                   "(biased to high noise)", choices=TIMESTEP_SAMPLING)
    offset_noise: float = param(0.0, help="std of a per-(video, channel) offset added to the training noise "
                                "(paper: 0)", ge=0, le=1)
    decoded_condition: bool = param(False, help="stages cam / cam_apm / conc_cond: condition on frames decoded from "
                                    "the clip's latents, as sampling does (paper: the clip's own frames)")
    condition_noise: float = param(0.0, help="with decoded_condition: the largest std of the noise added to the "
                                   "conditioning latents before decoding (paper: 0)", ge=0, le=1)
    control_text: str | None = param(None, help="stage cam: what CAM's control branch reads, prompt (paper) or empty "
                                     "(default: the preset's)", choices=CONTROL_TEXTS)
    apm_lr: float | None = param(None, help="stage cam_apm: the learning rate of APM's gates, resampler and mixer "
                                 "(paper: lr)", gt=0, le=1)
    main_branch: str = param("frozen", help="stage cam: what it trains of the main branch besides CAM, frozen (paper), "
                             "spatial (stage 2's layers) or all (Conc-Cond's)", choices=MAIN_BRANCH_MODES)
    apm_only: bool = param(False, help="stage cam_apm: train APM alone, everything else frozen (paper: all of stage "
                           "2's layers)")
    upscaled_input: bool = param(False, help="stage refiner: train on the input refinement gives it, the clip "
                                 "reduced to the low-res size, decoded and upscaled, noised to T' (paper: a plain "
                                 "video model on clips)")


@dataclass(frozen=True)
class TrainConfig:
    """One stage of training: the paper's options (Sec. 5.1, App. E.1), the run's engineering
    options, and in ``beyond`` the options beyond the paper. ``init`` is the model directory the
    stage starts from: none for ``vae`` (random preset weights), a Video-LDM for
    ``base``/``cam``/``conc_cond``/``refiner`` (``base`` may also start from random weights), the
    ``cam`` result for ``cam_apm``. Each field is declared once (models.params): the flags of
    ``streamingt2v train`` and the parameters of the ``train-streamingt2v`` flow are derived from them."""

    stage: str = param(help="the stage to train (cam: the paper's stage 1, cam_apm: its stage 2, conc_cond: the "
                       "App. D.1 baseline)", choices=STAGES)
    steps: int = param(help="optimiser steps of the stage", ge=1)
    init: str | None = param(None, help="the model directory the stage starts from (local or s3://)")
    preset: str = param("tiny", help="model sizes (tiny: the toy world's, modelscope: the paper's)",
                        choices=tuple(PRESETS))
    data: str = param(TOYWORLD, help="'toyworld' or a clip manifest (Parquet, local or s3://)", non_empty=True)
    fps: float = param(3.0, help="frame rate clips are sampled at (paper: 3)", gt=0, le=120)
    batch_size: int = param(8, help="global batch size, split across workers (paper: 8)", ge=1)
    lr: float = param(5e-5, help="AdamW learning rate (paper: 5e-5)", gt=0, le=1)
    weight_decay: float = param(0.0, help="AdamW weight decay", ge=0)
    grad_clip: float = param(1.0, help="the largest gradient norm of a step", gt=0)
    seed: int = param(0, help="seed of the clips, noise and dropout drawn, and of random initial weights", ge=0)
    checkpoint_every: int = param(100, help="optimiser steps between checkpoints", ge=1)
    mixed_precision: str = param("no", help="bf16 / fp16 autocast on GPUs; parameters stay fp32", choices=PRECISIONS)
    gradient_checkpointing: bool = param(False, help="recompute activations in the backward pass (less memory, "
                                         "the same steps)")
    dropout: Dropout = group(Dropout, prefix="dropout_", help="condition dropout")
    cond_frames: int | None = param(None, help="stage conc_cond: Conc-Cond's F_cond (paper: 8; default: the "
                                    "preset's CAM F_cond)", ge=1)
    image_encoder: str | None = param(None, help="stages cam / conc_cond / cam_apm: the CLIP (directory or hub id) "
                                      "whose image tower embeds APM's anchor, e.g. a clip stage's result (default: "
                                      "the init model's, else the preset's)")
    beyond: BeyondPaper = group(BeyondPaper, help="options beyond the paper (off by default)", beyond_paper=True)

    def __post_init__(self) -> None:
        check(self)
        beyond = self.beyond
        require(beyond.decay_steps <= self.steps - beyond.warmup_steps, "decay_steps", beyond.decay_steps,
                f"an integer in [0, steps - warmup_steps] = [0, {self.steps - beyond.warmup_steps}]")
        if self.stage in ("cam", "cam_apm", "conc_cond", "refiner"):
            require(self.init is not None, "init", None, f"a model directory to start stage {self.stage!r} from")
        require(self.image_encoder is None or self.stage in CONDITIONED_STAGES, "image_encoder", self.image_encoder,
                f"None outside the stages with an anchor model {CONDITIONED_STAGES}")
        require(not beyond.train_text_encoder or self.stage == "base", "train_text_encoder", True,
                "False outside the base stage (CLIP stays frozen, paper Sec. 5.1)")
        require(not beyond.decoded_condition or self.stage in CONDITIONED_STAGES, "decoded_condition", True,
                f"False outside the stages with a chunk condition {CONDITIONED_STAGES}")
        check_condition_noise(beyond.condition_noise, beyond.decoded_condition)
        check_main_branch(beyond.main_branch, self.stage)
        check_apm_only(beyond.apm_only, self.stage)
        require(beyond.control_text is None or self.stage == "cam", "control_text", beyond.control_text,
                "None outside stage 'cam' (later stages keep their init model's CAM)")
        require(beyond.apm_lr is None or self.stage == "cam_apm", "apm_lr", beyond.apm_lr,
                "None outside stage 'cam_apm' (the stage that trains APM)")
        require(beyond.apm_lr is None or not beyond.apm_only, "apm_lr", beyond.apm_lr,
                "None with apm_only (APM is all that trains; its rate is lr)")
        require(not beyond.upscaled_input or self.stage == "refiner", "upscaled_input", True,
                "False outside stage 'refiner'")
        require(beyond.tokenizer is None or beyond.train_text_encoder, "tokenizer", beyond.tokenizer,
                "None unless the text encoder is trained (--train-text-encoder, base stage): its new "
                "token embeddings must be learnt")

    def learning_rate(self, step: int) -> float:
        """The lr of optimiser step ``step`` (1-based): ``lr * step / warmup_steps`` during the
        warmup, ``lr`` in between, ``lr * (steps - step + 1) / decay_steps`` during the decay (so
        the last step still moves, at ``lr / decay_steps``)."""
        warmup, decay = self.beyond.warmup_steps, self.beyond.decay_steps
        factor = 1.0
        if step <= warmup:
            factor = step / warmup
        if decay > 0:  # steps past the end (a caller stepping on) stay at the last lr
            factor = min(factor, max(self.steps - step + 1, 1) / decay)
        return self.lr * factor

    def noise_draw(self) -> NoiseDraw:
        return NoiseDraw(self.beyond.timestep_sampling, self.beyond.offset_noise)

    def clip_spec(self) -> ClipSpec:
        if self.stage == "refiner":  # the refinement stage's chunk on its canvas (Sec. 4.3)
            geometry = RefineConfig(**REFINE_GEOMETRY[self.preset])
            return ClipSpec(geometry.chunk_frames, self.fps, geometry.canvas_height, geometry.canvas_width)
        video = get_preset(self.preset).video
        return ClipSpec(clip_frames(self.stage, video.frames_per_chunk), self.fps, video.height, video.width)

    def to_dict(self) -> dict:
        """The nested form (``dropout`` and ``beyond`` as objects), as checkpoints and exports record it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A config from :meth:`to_dict`'s nested form, from the flat form of configs recorded before
        ``beyond`` was a group (:data:`FLAT_LAYOUT`), or from the boundaries' flat parameters
        (``dropout_text``); fields it lacks (recorded before they existed) take their defaults."""
        return build(cls, values)

    def flat_dict(self) -> dict:
        """The config in the flat form of :data:`FLAT_LAYOUT`; fields added since follow, those
        away from their defaults only, so a record of the old form keeps its hash."""
        values = self.to_dict()
        values.update(values.pop("beyond"))
        defaults = flatten(BeyondPaper())
        return {**{name: values.pop(name) for name in FLAT_LAYOUT},
                **{k: v for k, v in values.items() if k not in defaults or v != defaults[k]}}


FLAT_LAYOUT = ("stage", "steps", "init", "preset", "data", "fps", "batch_size", "lr", "warmup_steps", "decay_steps",
               "weight_decay", "grad_clip", "seed", "checkpoint_every", "mixed_precision", "gradient_checkpointing",
               "train_text_encoder", "dropout", "cond_frames", "timestep_sampling", "offset_noise", "tokenizer",
               "decoded_condition", "condition_noise", "control_text", "image_encoder", "apm_lr", "main_branch",
               "apm_only")
"""The keys, in their order, of a config recorded before the options beyond the paper became the
``beyond`` group: what :meth:`TrainConfig.flat_dict` writes, so that a record's hash (the
``train-streamingt2v`` flow's lineage of a stage's model) is the same in either form."""


def build_model(config: TrainConfig, device: str = "cpu", init_dir: str | None = None,
                image_encoder_dir: str | None = None) -> VideoLDM | StreamingT2V | CLIPPair:
    """The model a stage starts from; ``init_dir`` and ``image_encoder_dir`` are the local copies
    of ``config.init`` and ``config.image_encoder`` (default: :func:`local_init` of them)."""
    preset = get_preset(config.preset)
    if config.stage == "clip":
        if config.init is None:
            return CLIPPair.from_preset(preset, seed=config.seed, device=device)
        return _load_or_refuse(CLIPPair, config, init_dir or local_init(config.init), device=device)
    if config.stage == "base" and config.beyond.tokenizer is not None:
        return with_tokenizer(build_model(replace(config, beyond=replace(config.beyond, tokenizer=None)), device,
                                          init_dir), config.beyond.tokenizer)
    if config.stage == "vae" or (config.stage == "base" and config.init is None):
        return VideoLDM.from_preset(preset, seed=config.seed, device=device)
    init_dir = init_dir or local_init(config.init)
    image_encoder_dir = image_encoder_dir or local_init(config.image_encoder)

    def load(model_class):
        return _load_or_refuse(model_class, config, init_dir, torch_dtype=MASTER_DTYPE, device=device)

    if config.stage in ("base", "refiner"):
        return load(VideoLDM)
    if config.stage == "cam_apm":
        model = load(StreamingT2V)
        require(model.has_apm, "init", config.init, "a CAM model (stage cam's output), not Conc-Cond")
        return _with_image_encoder(model, image_encoder_dir, config, device)
    continuations = {"cam": ("cam", _continued_cam), "conc_cond": ("conc-cond", _continued_conc_cond)}
    if config.stage in continuations:  # a fresh model from a Video-LDM, or one of its own kind continued
        own, continued = continuations[config.stage]
        names = {"cam": "a CAM model", "conc-cond": "the Conc-Cond baseline"}
        init_kind = conditioning_of(init_dir)
        require(init_kind in (None, own), "init", config.init,
                f"a Video-LDM or {names[own]} to start stage {config.stage!r} from, not {names.get(init_kind)}")
        if init_kind == own:
            return _with_image_encoder(continued(load(StreamingT2V), config), image_encoder_dir, config, device)
    base = load(VideoLDM)
    torch.manual_seed(config.seed)
    source = image_encoder_dir or preset.image_encoder_id
    if source is not None:
        image_encoder = _image_encoder(source, config, device)
    else:
        with torch.device(device):
            image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**preset.image_encoder)).eval()
    if config.stage == "cam":
        control_text = config.beyond.control_text
        cam = preset.cam if control_text is None else replace(preset.cam, control_text=control_text)
        return StreamingT2V.from_video_ldm(base, image_encoder, cam, preset.apm)
    unet = ConcCondUNet.from_base(base.unet, config.cond_frames or preset.cam.cond_frames).eval()
    return StreamingT2V(unet, base.vae, base.text_encoder, base.tokenizer, image_encoder, base.video, base.schedule)


def _continued_conc_cond(model: StreamingT2V, config: TrainConfig) -> StreamingT2V:
    """Stage ``conc_cond`` from a Conc-Cond model: its UNet trains on from where it stopped, so
    the baseline can be given the same continued budget as a continued CAM."""
    require(config.cond_frames in (None, model.cond_frames), "cond_frames", config.cond_frames,
            f"the init model's F_cond ({model.cond_frames}) or unset")
    return model


def _continued_cam(model: StreamingT2V, config: TrainConfig) -> StreamingT2V:
    """Stage ``cam`` from a CAM model (a stage-1 result, or a released StreamingT2V): its CAM
    trains on from where it stopped; ``control_text``, when given, replaces the model's."""
    if config.beyond.control_text is not None:
        model.unet.cam.config = replace(model.unet.cam.config, control_text=config.beyond.control_text)
        model.unet.register_to_config(cam_config=asdict(model.unet.cam.config))
        with torch.no_grad():
            model.unet.cam.set_empty_text(model.encode_prompt([""]))
    return model


def _with_image_encoder(model: StreamingT2V, image_encoder_dir: str | None, config: TrainConfig,
                        device: str) -> StreamingT2V:
    """``model`` with its image encoder replaced by the one in ``image_encoder_dir`` (``--image-encoder``),
    if given: how every stage that loads a saved StreamingT2V takes another CLIP."""
    if image_encoder_dir is not None:
        model.image_encoder = _image_encoder(image_encoder_dir, config, device)
    return model


def _load_or_refuse(model_class, config: TrainConfig, init_dir: str, **kwargs):
    try:
        return model_class.from_pretrained(init_dir, **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError("init", config.init, f"a loadable model directory ({type(exc).__name__})") from exc


def _image_encoder(source: str, config: TrainConfig, device: str) -> CLIPVisionModelWithProjection:
    """The image tower of the CLIP at ``source`` (a local directory or hub id), frozen like all of
    CLIP (paper Sec. 5.1)."""
    try:
        return load_image_encoder(source, device=device, torch_dtype=MASTER_DTYPE)
    except (OSError, ValueError) as exc:
        raise ConfigError("image_encoder", config.image_encoder or source,
                          f"a CLIP model directory or hub id ({type(exc).__name__})") from exc


def with_tokenizer(model: VideoLDM, name: str) -> VideoLDM:
    """``model`` with tokenizer ``name`` (one of :data:`TOKENIZERS`) and its text encoder's
    vocabulary grown to match; a model already using it is returned as is (a resumed stage)."""
    from toyworld.vocabulary import toy_world_tokenizer

    require(name == "toyworld", "tokenizer", name, f"one of {TOKENIZERS}")
    tokenizer = toy_world_tokenizer()
    if model.tokenizer is not None and model.tokenizer.get_vocab() == tokenizer.get_vocab():
        return model
    require(model.tokenizer is not None, "tokenizer", name, "a model that has a tokenizer to extend")
    extend_vocabulary(model.text_encoder, model.tokenizer, tokenizer)
    model.tokenizer = tokenizer
    return model


def local_init(path: str | None) -> str | None:
    """A local directory holding the init model (fetched once if it is on an object store)."""
    if path is None:
        return None
    if "://" in path and not path.startswith("file://"):
        return fetch_model_dir(path)
    return path.removeprefix("file://")


def init_fingerprint(init_dir: str | None) -> str | None:
    """SHA-256 over the init model's files (names and contents). A checkpoint records it, so that
    a run resumed after its init was retrained (e.g. an earlier stage of the flow) is refused
    instead of silently continuing from weights trained on the old init."""
    if init_dir is None:
        return None
    digest = hashlib.sha256()
    root = Path(init_dir)
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "training.json"):
        digest.update(str(file.relative_to(root)).encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def combined_fingerprint(init: str | None, image_encoder: str) -> str:
    """The init fingerprint extended by the image encoder's (``image_encoder``: its local copy,
    :func:`local_init`): its files' when it is a directory, else its hub id."""
    part = init_fingerprint(image_encoder) if Path(image_encoder).exists() else image_encoder
    return hashlib.sha256(f"{init}:{part}".encode()).hexdigest()


def fetch_model_dir(uri: str) -> str:
    """A local copy of a model directory on an object store (the loaders read local files)."""
    fs, path = storage.filesystem(uri)
    if not fs.exists(path):
        raise ConfigError("init", uri, "an existing model directory")
    local = tempfile.mkdtemp(prefix="streamingt2v-init-")
    fs.get(path.rstrip("/") + "/", local + "/", recursive=True)
    return local


class TrainingRun:
    """Optimiser steps of one stage; checkpoint/restore; export of the trained model."""

    def __init__(self, config: TrainConfig, device: str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        init_dir = local_init(config.init)
        self.init_fingerprint = init_fingerprint(init_dir)
        image_encoder_dir = local_init(config.image_encoder)  # fetched once, like the init
        if image_encoder_dir is not None:  # the anchor embeddings are part of what a run starts from
            self.init_fingerprint = combined_fingerprint(self.init_fingerprint, image_encoder_dir)
        self.model = build_model(config, device, init_dir, image_encoder_dir)
        beyond = config.beyond
        upscaled = None
        if beyond.upscaled_input:  # the low-res size and the refinement that upscales it
            video = get_preset(config.preset).video
            upscaled = ((video.height, video.width), RefineConfig(**REFINE_GEOMETRY[config.preset]))
        self.objective: Objective = make_objective(config.stage, self.model, beyond.train_text_encoder,
                                                   config.dropout, config.noise_draw(), beyond.decoded_condition,
                                                   beyond.condition_noise, beyond.main_branch, beyond.apm_only,
                                                   upscaled)
        self.objective.freeze_all_but_trainable()
        if config.gradient_checkpointing:
            for name in ("unet", "vae"):
                module = self.objective.modules().get(name)
                if module is not None and getattr(module, "_supports_gradient_checkpointing", False):
                    module.enable_gradient_checkpointing()
        self.params = self.objective.trainable_parameters()
        groups = self._parameter_groups()
        self.lr_scales = [scale for scale, _ in groups]  # each group's lr over config.lr
        self.optimizer = torch.optim.AdamW([{"params": params} for _, params in groups], lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.mixed_precision == "fp16")
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.history: list[tuple[int, float]] = []  # (step, training loss): the training curve

    def _parameter_groups(self) -> list[tuple[float, list[torch.nn.Parameter]]]:
        """(lr scale, parameters): one group at ``lr``, or with ``apm_lr`` APM's apart."""
        apm_lr = self.config.beyond.apm_lr
        if apm_lr is None:
            return [(1.0, self.params)]
        apm = {id(p) for p in self.model.unet.apm_parameters()}
        return [(1.0, [p for p in self.params if id(p) not in apm]),
                (apm_lr / self.config.lr, [p for p in self.params if id(p) in apm])]

    def source(self) -> ClipSource:
        return self.source_for(self.config)

    @staticmethod
    def source_for(config: TrainConfig) -> ClipSource:
        return ClipSource(config.data, config.clip_spec(), config.seed)

    def _autocast(self):
        if self.config.mixed_precision == "no":
            return nullcontext()
        dtype = torch.bfloat16 if self.config.mixed_precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def train_step(self, frames: torch.Tensor, captions: list[str], all_reduce=None) -> float:
        """One optimiser step on a batch; ``all_reduce`` averages gradients across workers."""
        self.optimizer.zero_grad(set_to_none=True)
        # Layers that draw from torch's global generator (the UNet3D's temporal-conv dropout)
        # get a seed from the run's generator: a step is reproducible, also after a resume.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=self.generator)))
            with self._autocast():
                loss = self.objective.loss(frames.to(self.device), captions, self.generator)
            self.scaler.scale(loss).backward()
        if all_reduce is not None:
            all_reduce(self.params)
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        # Set every step (not only at construction): a resumed run's optimizer state carries the
        # lr it was saved with, and the schedule is the config's, not the checkpoint's.
        for param_group, scale in zip(self.optimizer.param_groups, self.lr_scales):
            param_group["lr"] = self.config.learning_rate(self.step + 1) * scale
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self.history.append((self.step, float(loss.detach())))
        return self.history[-1][1]

    def apm_gates(self) -> list[float]:
        """SiLU(alpha_l) of every APM layer (Eq. 6), the weight with which the anchor enters each
        cross-attention, while stage ``cam_apm`` trains them (else []). All about 0 means APM is
        still inert: the anchor changes nothing."""
        if self.config.stage != "cam_apm":
            return []
        return [float(torch.nn.functional.silu(alpha.detach().float())) for alpha in self.model.unet.apm_gates()]

    def metrics(self, loss: float) -> dict[str, float]:
        """What a step reports: loss and step, and in stage 2 the largest |SiLU(alpha_l)|."""
        gates = self.apm_gates()
        return {"loss": loss, "step": self.step, **({"apm_gate": max(map(abs, gates))} if gates else {})}

    @torch.no_grad()
    def eval_loss(self, frames: torch.Tensor, captions: list[str], seed: int = 1234) -> float:
        """The loss on a fixed batch with fixed noise (for curves and tests)."""
        g = torch.Generator().manual_seed(seed)
        return float(self.objective.loss(frames.to(self.device), captions, g))

    # -- checkpoints --------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        ids = {id(p) for p in self.params}
        state = {}
        for prefix, module in self.objective.modules().items():
            for name, p in module.named_parameters():
                if id(p) in ids:
                    state[f"{prefix}.{name}"] = p.detach()
        return state

    def save_checkpoint(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.cpu().contiguous() for k, v in self.trainable_state().items()},
                  directory / "trainable.safetensors")
        torch.save({"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                    "generator": self.generator.get_state()}, directory / "optimizer.pt")
        extra = {}
        if self.config.stage == "vae":
            extra["scaling_factor"] = self.model.vae.config.scaling_factor
        # Written last: a checkpoint directory with this file is complete.
        (directory / STATE_FILE).write_text(json.dumps({"step": self.step, "config": self.config.to_dict(),
                                                        "init_fingerprint": self.init_fingerprint,
                                                        "history": self.history, **extra}))

    def load_checkpoint(self, directory: str | Path) -> None:
        from safetensors.torch import load_file

        directory = Path(directory)
        state = json.loads((directory / STATE_FILE).read_text())
        recorded = state.get("init_fingerprint")
        require(recorded in (None, self.init_fingerprint), "init", self.config.init,
                f"the model the checkpoint {directory} was trained from; it has changed since (retrained?). "
                "Resume with the same init, or start a new run directory")
        saved = load_file(directory / "trainable.safetensors")
        own = self.trainable_state()
        require(set(saved) == set(own), "checkpoint", str(directory),
                f"a checkpoint of stage {self.config.stage} with main_branch={self.config.beyond.main_branch!r} and "
                f"apm_only={self.config.beyond.apm_only} (a "
                "different set of trained parameters; export it and start a new run from the export to change it)")
        with torch.no_grad():
            for k, v in saved.items():
                own[k].copy_(v)
        extra = torch.load(directory / "optimizer.pt", weights_only=True)
        require(len(extra["optimizer"]["param_groups"]) == len(self.lr_scales), "apm_lr", self.config.beyond.apm_lr,
                f"what the checkpoint {directory} was trained with (set or not); start a new run directory "
                "to change it")
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scaler.load_state_dict(extra["scaler"])
        self.generator.set_state(extra["generator"])
        self.step = state["step"]
        self.history = [tuple(h) for h in state.get("history", [])]
        if "scaling_factor" in state:
            self.model.vae.register_to_config(scaling_factor=state["scaling_factor"])

    def export(self, path: str | Path, calibration_frames: torch.Tensor | None = None) -> None:
        """Save the trained model in its loadable format (VideoLDM or StreamingT2V directory).
        A trained VAE first gets its latent scaling factor from ``calibration_frames``."""
        for module in self.objective.modules().values():
            module.eval()
        if self.config.stage == "vae":
            require(calibration_frames is not None, "calibration_frames", None, "frames to calibrate the VAE on")
            self.objective.calibrate_scaling(calibration_frames)
        self.model.save_pretrained(path)
        (Path(path) / "training.json").write_text(json.dumps({"stage": self.config.stage, "step": self.step,
                                                              "config": self.config.to_dict(),
                                                              "history": self.history,
                                                              **({"apm_gates": gates} if (gates := self.apm_gates())
                                                                 else {})}))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under ``run_dir/checkpoints`` (complete = its state file,
    written last, exists)."""
    done = sorted(Path(run_dir).glob(f"checkpoints/step-*/{STATE_FILE}"))
    return done[-1].parent if done else None


def train_in_process(config: TrainConfig, run_dir: str | Path, out: str | Path | None = None,
                     device: str = "cpu", log=print) -> TrainingRun:
    """Train one stage without Ray (single process), resuming from ``run_dir``'s newest
    checkpoint (which also holds the loss history); export to ``out`` at the end."""
    run_dir = Path(run_dir)
    run = TrainingRun(config, device)
    if (ckpt := latest_checkpoint(run_dir)) is not None:
        run.load_checkpoint(ckpt)
        log(f"resumed from {ckpt} at step {run.step}")
    source = run.source()
    batches = local_batches(source, config.batch_size, run.step)
    while run.step < config.steps:
        frames, captions = next(batches)
        loss = run.train_step(frames, captions)
        if run.step % config.checkpoint_every == 0 or run.step == config.steps:
            run.save_checkpoint(run_dir / "checkpoints" / f"step-{run.step:08d}")
            gates = run.apm_gates()
            log(f"step {run.step} loss {loss:.4f}" + (f" apm gates {' '.join(f'{g:+.4f}' for g in gates)}"
                                                      if gates else ""))
    if out is not None:
        run.export(out, calibration_frames=next(local_batches(source, 64 if config.stage == "vae" else 1))[0])
    return run

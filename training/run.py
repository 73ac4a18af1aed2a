"""A training run: config, the model a stage starts from, optimiser steps, checkpoints, export.

Everything here is plain PyTorch and runs in-process; :mod:`training.ray_train` runs the same
:class:`TrainingRun` inside Ray Train workers. A checkpoint holds the trainable parameters, the
optimiser state, the step and the generator state, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from infra import storage
from models.cam import CONTROL_TEXTS
from models.clip_image import CLIPPair, load_image_encoder
from models.conc_cond import ConcCondUNet
from models.errors import ConfigError, require
from models.presets import REFINE_GEOMETRY, get_preset
from models.refinement import RefineConfig
from models.streaming_t2v import StreamingT2V, conditioning_of
from models.tokenizer import extend_vocabulary
from models.video_ldm import VideoLDM
from training.data import TOYWORLD, ClipSource, ClipSpec, local_batches
from training.objectives import (CONDITIONED_STAGES, STAGES, Dropout, NoiseDraw, Objective, check_apm_only,
                                 check_condition_noise, check_main_branch, clip_frames, make_objective)

PRECISIONS = ("no", "bf16", "fp16")
TOKENIZERS = (None, "toyworld")  # None: the init model's (or the preset's) tokenizer
STATE_FILE = "training_state.json"
MASTER_DTYPE = torch.float32
"""The weights training updates, whatever the init directory stores (the shipped toy-world model
and converted official checkpoints are float16); ``--mixed-precision`` autocasts the compute."""


@dataclass(frozen=True)
class TrainConfig:
    """One stage of training. ``init`` is the model directory the stage starts from: none for
    ``vae`` (random preset weights), a Video-LDM for ``base``/``cam``/``conc_cond``/``refiner``
    (``base`` may also start from random weights), the ``cam`` result for ``cam_apm``."""

    stage: str
    steps: int
    init: str | None = None
    preset: str = "tiny"
    data: str = TOYWORLD  # or a clip manifest URI (local or s3://)
    fps: float = 3.0  # paper: 3 FPS clips
    batch_size: int = 8  # global, split across workers (paper: 8)
    lr: float = 5e-5  # paper: 5e-5
    # Warmup-stable-decay: the lr rises linearly over the first ``warmup_steps`` and falls
    # linearly over the last ``decay_steps``; 0 and 0 (the default) is the paper's constant lr.
    # The lr is a function of the step and this config only (:meth:`learning_rate`), so adding a
    # decay to a constant-lr run and resuming it equals running the decayed schedule from scratch.
    warmup_steps: int = 0
    decay_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    mixed_precision: str = "no"  # bf16 / fp16 autocast on GPUs; parameters stay fp32
    gradient_checkpointing: bool = False
    train_text_encoder: bool = False  # base stage of a model trained from scratch (toy world)
    dropout: Dropout = field(default_factory=Dropout)
    cond_frames: int | None = None  # Conc-Cond's F_cond (default: the preset's CAM F_cond)
    timestep_sampling: str = "uniform"  # paper; 'cubic' biases to high noise (training.objectives)
    offset_noise: float = 0.0  # paper: 0; > 0 hides the clip's mean colour from x_t (objectives.draw_noise)
    # 'toyworld': the base stage swaps in toyworld.vocabulary's tokenizer (one token per toy word)
    # and grows the text encoder's embeddings to match; the trained text encoder learns them.
    tokenizer: str | None = None
    # Condition on frames decoded from the clip's latents, as sampling does (objectives.
    # StreamingObjective.condition); False (the paper's) conditions on the clip's own frames.
    decoded_condition: bool = False
    # Stages with a chunk condition, with decoded_condition: the largest std of the noise added to
    # the conditioning latents before decoding, s ~ U(0, condition_noise) per clip (objectives.
    # degrade_condition); 0 (the paper's) leaves the condition clean. A stand-in for the drift of
    # a long video's own chunks, against which APM's anchor is the appearance reference.
    condition_noise: float = 0.0
    # Stage ``cam``: what CAM's control branch reads, "prompt" (the paper's) or "empty"
    # (models.cam.CAMConfig.control_text); None keeps the preset's. Later stages inherit it from
    # their init model.
    control_text: str | None = None
    # Stages cam / conc_cond / cam_apm: the CLIP (directory or hub id; its image tower) whose
    # embeddings APM reads, e.g. the toy world's ``clip`` stage result. None: the init model's
    # (cam_apm), else the preset's released CLIP, else a random tower (the tiny preset).
    image_encoder: str | None = None
    # Stage ``cam_apm``: the learning rate of APM's parameters (alpha_l, resampler, mixer); None:
    # ``lr``, the paper's one rate. The warmup/decay schedule scales both alike. Beyond the paper:
    # Adam moves a zero-initialised gate by at most about ``lr`` per step, so at 1e-4 a 1000-step
    # run cannot open SiLU(alpha_l) (Eq. 6) far enough for the anchor to matter.
    apm_lr: float | None = None
    # Stage ``cam``: what it trains of the main branch besides CAM, "frozen" (the paper's stage
    # 1), "spatial" (stage 2's trainable layers) or "all" (Conc-Cond's). Beyond the paper: CAM and
    # Conc-Cond compared at equal trainable parameters (objectives.MAIN_BRANCH_MODES).
    main_branch: str = "frozen"
    # Stage ``cam_apm``: train APM alone (alpha_l, resampler, mixer), everything else frozen.
    # Beyond the paper: a warm-up on drifted conditions that opens the gates before a full stage
    # 2 (objectives.check_apm_only says why).
    apm_only: bool = False

    def __post_init__(self) -> None:
        require(self.stage in STAGES, "stage", self.stage, f"one of {STAGES}")
        get_preset(self.preset)
        require(self.steps >= 1, "steps", self.steps, "an integer >= 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        require(math.isfinite(self.lr) and self.lr > 0, "lr", self.lr, "a learning rate > 0")
        require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "an integer >= 0")
        require(0 <= self.decay_steps <= self.steps - self.warmup_steps, "decay_steps", self.decay_steps,
                f"an integer in [0, steps - warmup_steps] = [0, {self.steps - self.warmup_steps}]")
        require(self.checkpoint_every >= 1, "checkpoint_every", self.checkpoint_every, "an integer >= 1")
        require(self.mixed_precision in PRECISIONS, "mixed_precision", self.mixed_precision, f"one of {PRECISIONS}")
        require(self.fps > 0, "fps", self.fps, "a frame rate > 0")
        self.noise_draw()  # validates timestep_sampling and offset_noise
        if self.stage in ("cam", "cam_apm", "conc_cond", "refiner"):
            require(self.init is not None, "init", None, f"a model directory to start stage {self.stage!r} from")
        require(not self.train_text_encoder or self.stage == "base", "train_text_encoder", True,
                "False outside the base stage (CLIP stays frozen, paper Sec. 5.1)")
        require(not self.decoded_condition or self.stage in CONDITIONED_STAGES, "decoded_condition", True,
                f"False outside the stages with a chunk condition {CONDITIONED_STAGES}")
        check_condition_noise(self.condition_noise, self.decoded_condition)
        check_main_branch(self.main_branch, self.stage)
        check_apm_only(self.apm_only, self.stage)
        require(self.control_text is None or self.stage == "cam", "control_text", self.control_text,
                "None outside stage 'cam' (later stages keep their init model's CAM)")
        require(self.control_text in (None, *CONTROL_TEXTS), "control_text", self.control_text,
                f"one of {CONTROL_TEXTS}")
        require(self.image_encoder is None or self.stage in CONDITIONED_STAGES, "image_encoder", self.image_encoder,
                f"None outside the stages with an anchor model {CONDITIONED_STAGES}")
        require(self.apm_lr is None or self.stage == "cam_apm", "apm_lr", self.apm_lr,
                "None outside stage 'cam_apm' (the stage that trains APM)")
        require(self.apm_lr is None or not self.apm_only, "apm_lr", self.apm_lr,
                "None with apm_only (APM is all that trains; its rate is lr)")
        require(self.apm_lr is None or (math.isfinite(self.apm_lr) and self.apm_lr > 0), "apm_lr", self.apm_lr,
                "a learning rate > 0, or None for lr")
        require(self.tokenizer in TOKENIZERS, "tokenizer", self.tokenizer, f"one of {TOKENIZERS}")
        require(self.tokenizer is None or self.train_text_encoder, "tokenizer", self.tokenizer,
                "None unless the text encoder is trained (--train-text-encoder, base stage): its new "
                "token embeddings must be learnt")

    def learning_rate(self, step: int) -> float:
        """The lr of optimiser step ``step`` (1-based): ``lr * step / warmup_steps`` during the
        warmup, ``lr`` in between, ``lr * (steps - step + 1) / decay_steps`` during the decay (so
        the last step still moves, at ``lr / decay_steps``)."""
        factor = 1.0
        if step <= self.warmup_steps:
            factor = step / self.warmup_steps
        if self.decay_steps > 0:  # steps past the end (a caller stepping on) stay at the last lr
            factor = min(factor, max(self.steps - step + 1, 1) / self.decay_steps)
        return self.lr * factor

    def noise_draw(self) -> NoiseDraw:
        return NoiseDraw(self.timestep_sampling, self.offset_noise)

    def clip_spec(self) -> ClipSpec:
        if self.stage == "refiner":  # the refinement stage's chunk on its canvas (Sec. 4.3)
            geometry = RefineConfig(**REFINE_GEOMETRY[self.preset])
            return ClipSpec(geometry.chunk_frames, self.fps, geometry.canvas_height, geometry.canvas_width)
        video = get_preset(self.preset).video
        return ClipSpec(clip_frames(self.stage, video.frames_per_chunk), self.fps, video.height, video.width)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        return cls(**{**values, "dropout": Dropout(**values.get("dropout", {}))})


def build_model(config: TrainConfig, device: str = "cpu", init_dir: str | None = None,
                image_encoder_dir: str | None = None) -> VideoLDM | StreamingT2V | CLIPPair:
    """The model a stage starts from; ``init_dir`` and ``image_encoder_dir`` are the local copies
    of ``config.init`` and ``config.image_encoder`` (default: :func:`local_init` of them)."""
    preset = get_preset(config.preset)
    if config.stage == "clip":
        if config.init is None:
            return CLIPPair.from_preset(preset, seed=config.seed, device=device)
        return _load_or_refuse(CLIPPair, config, init_dir or local_init(config.init), device=device)
    if config.stage == "base" and config.tokenizer is not None:
        return with_tokenizer(build_model(replace(config, tokenizer=None), device, init_dir), config.tokenizer)
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
        cam = preset.cam if config.control_text is None else replace(preset.cam, control_text=config.control_text)
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
    if config.control_text is not None:
        model.unet.cam.config = replace(model.unet.cam.config, control_text=config.control_text)
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
        self.objective: Objective = make_objective(config.stage, self.model, config.train_text_encoder,
                                                   config.dropout, config.noise_draw(), config.decoded_condition,
                                                   config.condition_noise, config.main_branch, config.apm_only)
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
        if self.config.apm_lr is None:
            return [(1.0, self.params)]
        apm = {id(p) for p in self.model.unet.apm_parameters()}
        return [(1.0, [p for p in self.params if id(p) not in apm]),
                (self.config.apm_lr / self.config.lr, [p for p in self.params if id(p) in apm])]

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
        for group, scale in zip(self.optimizer.param_groups, self.lr_scales):
            group["lr"] = self.config.learning_rate(self.step + 1) * scale
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
                f"a checkpoint of stage {self.config.stage} with main_branch={self.config.main_branch!r} and "
                f"apm_only={self.config.apm_only} (a "
                "different set of trained parameters; export it and start a new run from the export to change it)")
        with torch.no_grad():
            for k, v in saved.items():
                own[k].copy_(v)
        extra = torch.load(directory / "optimizer.pt", weights_only=True)
        require(len(extra["optimizer"]["param_groups"]) == len(self.lr_scales), "apm_lr", self.config.apm_lr,
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

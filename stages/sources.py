"""Where each stage's model comes from: the shipped toy-world weights (tiny), a preset's random
weights, a local directory or a hub id. Loading errors become ConfigErrors that name the option."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from models.dtypes import DTYPES, slow_on_this_cpu
from models.errors import ConfigError
from models.fingerprint import fingerprint, weights_digest
from models.presets import REFINE_GEOMETRY, REFINER_PRESETS, get_preset
from models.tokenizer import tiny_clip_tokenizer
from models.refinement import RefineConfig
from models.streaming_t2v import StreamingT2V
from models.vid2vid_xl import is_vid2vid_xl_folder, load_vid2vid_xl, refine_defaults
from models.video_ldm import VideoLDM

WEIGHTS: tuple[str, ...] = ("trained", "random")

_SHIPPED = {"base_model": "base", "streaming_model": "streaming", "refiner": "refiner"}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSources:
    """``weights='trained'`` loads trained models: for preset 'tiny' the toy-world model
    (:mod:`toyworld.weights`), for real presets the paths below. ``weights='random'`` builds every
    model from its preset's config with fixed random weights (weights_seed: tests, and benchmarks,
    where compute does not depend on weight values). None means 'trained', every preset's default
    (for 'tiny' the shipped toy-world model). Any of the paths overrides one model. The
    'modelscope' preset needs its models on disk or in the local hub cache: base_model (diffusers
    Video-LDM), streaming_model (our StreamingT2V directory, e.g. from ``streamingt2v
    convert-official``) and refiner (a diffusers UNet3D video model used for SDEdit, the ModelScope
    folder of MS-Vid2Vid-XL, converted in memory, or the directory ``convert_vid2vid_xl`` made
    of it)."""

    preset: str = "tiny"
    base_model: str | None = None
    streaming_model: str | None = None
    refiner: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    weights: str | None = None  # 'trained' | 'random' | None ('trained')
    weights_seed: int = 0
    low_memory: bool = False  # one model on the device at a time, long tensors in CPU memory (stages.residency)

    def __post_init__(self) -> None:
        get_preset(self.preset)
        if self.weights is None:
            object.__setattr__(self, "weights", "trained")
        if self.weights not in WEIGHTS:
            raise ConfigError("weights", self.weights, f"one of {WEIGHTS}")
        if self.dtype not in DTYPES:
            raise ConfigError("dtype", self.dtype, f"one of {sorted(DTYPES)}")
        if self.device == "cpu" and not self.low_memory:  # low memory: cpu may be where models rest (Stages.load)
            _warn_if_slow_on_cpu(self.dtype)
        if self.preset != "tiny" and self.weights == "trained":
            for name in ("base_model", "streaming_model"):
                if getattr(self, name) is None:
                    raise ConfigError(name, None, f"a model directory or hub id (preset {self.preset!r} has no "
                                      "built-in weights)")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def refine_config(self, **overrides) -> RefineConfig:
        """The preset's refine geometry, then what the refiner prescribes (MS-Vid2Vid-XL: guidance
        rescale 0.2), then ``overrides``."""
        location = self.location("refiner")
        prescribed = refine_defaults(location) if location is not None and Path(location).is_dir() else {}
        return RefineConfig(**{**REFINE_GEOMETRY[self.preset], **prescribed, **overrides})

    def _random(self, model):
        """A random-weight model on this device and dtype. Real presets ship their tokenizer with
        their weights; random ones get the offline byte-level tokenizer (compute does not depend
        on token values or weights: benchmarks)."""
        if model.tokenizer is None:
            model.tokenizer = tiny_clip_tokenizer()
        return model.to(self.device, self.torch_dtype)

    def location(self, option: str) -> str | None:
        """Where ``option`` (base_model, streaming_model, refiner) loads from; None: random weights."""
        explicit = getattr(self, option)
        if explicit is not None or self.preset != "tiny" or self.weights == "random":
            return explicit
        from toyworld.weights import model_dir

        return str(model_dir(_SHIPPED[option]))

    def fingerprint(self) -> str:
        """The fingerprint of the models these sources load (every model's files, or its random
        seed), with the preset and dtype: stored with every run, so that a run is never resumed,
        nor a finished video served, across a change of weights."""
        parts: dict[str, str | int | None] = {"preset": self.preset, "dtype": self.dtype}
        for option in _SHIPPED:
            location = self.location(option)
            parts[option] = weights_digest(location) if location is not None else f"random:{self.weights_seed}"
        return fingerprint(parts)

    def load_video_ldm(self) -> VideoLDM:
        if (location := self.location("base_model")) is None:
            return self._random(VideoLDM.from_preset(self.preset, seed=self.weights_seed))
        return _load("base_model", location, lambda p: VideoLDM.from_pretrained(
            p, torch_dtype=self.torch_dtype, device=self.device))

    def load_streaming(self) -> StreamingT2V:
        if (location := self.location("streaming_model")) is None:
            return self._random(StreamingT2V.from_preset(self.preset, seed=self.weights_seed))
        return _load("streaming_model", location, lambda p: StreamingT2V.from_pretrained(
            p, torch_dtype=self.torch_dtype, device=self.device))

    def load_tokenizer(self):
        """The tokenizer of the streaming model alone (what checks a prompt's length), without
        loading any weights: for a service's ingress."""
        from transformers import CLIPTokenizer

        if (location := self.location("streaming_model")) is None:
            return tiny_clip_tokenizer()
        return _load("streaming_model", location, lambda p: CLIPTokenizer.from_pretrained(p, subfolder="tokenizer"))

    def load_refiner(self) -> VideoLDM:
        if (location := self.location("refiner")) is None:
            if self.preset != "tiny" and self.weights == "trained":
                raise ConfigError("refiner", None, "a diffusers video model directory or hub id, or an "
                                  "MS-Vid2Vid-XL folder, for refinement (or --no-refine)")
            return self._random(VideoLDM.from_preset(REFINER_PRESETS[self.preset], seed=self.weights_seed + 1))
        if is_vid2vid_xl_folder(location):
            return _load("refiner", location, lambda p: load_vid2vid_xl(p, self.torch_dtype, self.device))
        # A refiner is sampled with the schedule it was trained with: its own scheduler config.
        return _load("refiner", location, lambda p: VideoLDM.from_pretrained(
            p, torch_dtype=self.torch_dtype, device=self.device, schedule=None))


@functools.cache
def _warn_if_slow_on_cpu(dtype: str) -> None:
    """Once per process: a half-precision CPU run on a CPU without that arithmetic takes hours
    where float32 takes minutes."""
    if slow_on_this_cpu(dtype):
        logger.warning("dtype %s on this CPU (no native %s arithmetic) runs matmuls and convolutions up to hundreds "
                       "of times slower than float32: use --dtype float32 on CPU (docs/performance.md)",
                       dtype, dtype)


@contextmanager
def _quiet_local_load(location: str) -> Iterator[None]:
    """No per-file 'Loading weights' progress bars when loading from a local directory (the
    shipped toy-world model loads in milliseconds, and a CLI's stderr is for errors). Hub
    downloads keep theirs."""
    if not Path(location).is_dir():
        yield
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    was = transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            transformers_logging.enable_progress_bar()
        if was[1]:
            diffusers_logging.enable_progress_bar()


def _load(option: str, location: str, loader):
    try:
        with _quiet_local_load(location):
            return loader(location)
    except ConfigError:
        raise
    except (OSError, ValueError, EnvironmentError) as exc:
        kind = "directory" if Path(location).exists() else "directory or downloadable hub id"
        raise ConfigError(option, location, f"a loadable model {kind} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]})") from exc




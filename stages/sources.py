"""Where each stage's model comes from: a preset's random weights (tiny), a local directory or a
hub id. Loading errors become ConfigErrors that name the option."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from models.errors import ConfigError
from models.presets import REFINE_GEOMETRY, TINY_REFINER, get_preset
from models.refinement import RefineConfig
from models.streaming_t2v import StreamingT2V
from models.video_ldm import VideoLDM

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelSources:
    """preset: 'tiny' builds every model from its config with fixed random weights (weights_seed);
    any of the paths overrides one model. The 'modelscope' preset needs its models on disk or in
    the local hub cache: base_model (diffusers Video-LDM), streaming_model (our StreamingT2V
    directory, e.g. from ``streamingt2v convert-official``) and refiner (a diffusers UNet3D
    video model used for SDEdit)."""

    preset: str = "tiny"
    base_model: str | None = None
    streaming_model: str | None = None
    refiner: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    weights_seed: int = 0

    def __post_init__(self) -> None:
        get_preset(self.preset)
        if self.dtype not in DTYPES:
            raise ConfigError("dtype", self.dtype, f"one of {sorted(DTYPES)}")
        if self.preset != "tiny":
            for name in ("base_model", "streaming_model"):
                if getattr(self, name) is None:
                    raise ConfigError(name, None, f"a model directory or hub id (preset {self.preset!r} has no "
                                      "built-in weights)")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def refine_config(self, **overrides) -> RefineConfig:
        return RefineConfig(**{**REFINE_GEOMETRY[self.preset], **overrides})

    def load_video_ldm(self) -> VideoLDM:
        if self.base_model is None:
            return VideoLDM.from_preset(self.preset, seed=self.weights_seed).to(self.device)
        return _load("base_model", self.base_model, lambda p: VideoLDM.from_pretrained(
            p, torch_dtype=self.torch_dtype, device=self.device))

    def load_streaming(self) -> StreamingT2V:
        if self.streaming_model is None:
            return StreamingT2V.from_preset(self.preset, seed=self.weights_seed).to(self.device)
        return _load("streaming_model", self.streaming_model, lambda p: StreamingT2V.from_pretrained(
            p, torch_dtype=self.torch_dtype, device=self.device))

    def load_refiner(self) -> VideoLDM:
        if self.refiner is None:
            if self.preset != "tiny":
                raise ConfigError("refiner", None, "a diffusers video model directory or hub id for refinement "
                                  "(or --no-refine)")
            return VideoLDM.from_preset(replace(TINY_REFINER), seed=self.weights_seed + 1).to(self.device)
        # A refiner is sampled with the schedule it was trained with: its own scheduler config.
        return _load("refiner", self.refiner, lambda p: VideoLDM.from_pretrained(
            p, torch_dtype=self.torch_dtype, device=self.device, schedule=None))


def _load(option: str, location: str, loader):
    try:
        return loader(location)
    except ConfigError:
        raise
    except (OSError, ValueError, EnvironmentError) as exc:
        kind = "directory" if Path(location).exists() else "directory or downloadable hub id"
        raise ConfigError(option, location, f"a loadable model {kind} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]})") from exc




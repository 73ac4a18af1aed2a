"""The shipped toy-world model: the ``tiny`` preset's trained weights.

``base`` is the Video-LDM (init-chunk), ``streaming`` the StreamingT2V with CAM+APM
(autoregressive-extend) and ``refiner`` the video model of the refinement stage, each a
loadable model directory (safetensors) produced by the project's own training code; README.md
beside this file gives the exact commands, seed and training curves.
"""

from __future__ import annotations

from pathlib import Path

from models.errors import ConfigError

WEIGHTS_DIR = Path(__file__).resolve().parent
MODELS: tuple[str, ...] = ("base", "streaming", "refiner")


def model_dir(name: str) -> Path:
    """The directory of one shipped model; a ConfigError if it is not part of this install."""
    if name not in MODELS:
        raise ConfigError("model", name, f"one of {MODELS}")
    path = WEIGHTS_DIR / name
    if not (path / "streamingt2v.json").is_file():
        raise ConfigError("weights", "trained", f"the shipped toy-world model at {path} (missing from this "
                          "install); or weights='random'")
    return path

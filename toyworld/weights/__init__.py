"""The shipped toy-world model: the ``tiny`` preset's trained weights.

``base`` is the Video-LDM (init-chunk), ``streaming`` the StreamingT2V with CAM+APM
(autoregressive-extend) and ``refiner`` the video model of the refinement stage, each a
loadable model directory (safetensors) produced by the project's own training code; README.md
beside this file gives the exact commands, seed and training curves.

``ablation/cam`` and ``ablation/conc_cond``, where shipped, are the two stage-1 models of the
CAM vs Conc-Cond rows of docs/toyworld.md (App. D.1), trained with the same budget from ``base``; they are
not used for generation, only by ``studies.toyworld_ablations``.
"""

from __future__ import annotations

from pathlib import Path

from models.errors import ConfigError

WEIGHTS_DIR = Path(__file__).resolve().parent
MODELS: tuple[str, ...] = ("base", "streaming", "refiner")
ABLATION_MODELS: tuple[str, ...] = ("ablation/cam", "ablation/conc_cond")


def model_dir(name: str) -> Path:
    """The directory of one shipped model; a ConfigError if it is not part of this install."""
    if name not in MODELS:
        raise ConfigError("model", name, f"one of {MODELS}")
    path = WEIGHTS_DIR / name
    if not (path / "streamingt2v.json").is_file():
        raise ConfigError("weights", "trained", f"the shipped toy-world model at {path} (missing from this "
                          "install); or weights='random'")
    return path


def ablation_model(name: str) -> Path | None:
    """The shipped ablation model ``name`` (one of :data:`ABLATION_MODELS`), or None when this
    install does not ship it."""
    if name not in ABLATION_MODELS:
        raise ConfigError("model", name, f"one of {ABLATION_MODELS}")
    path = WEIGHTS_DIR / name
    return path if (path / "streamingt2v.json").is_file() else None

"""Ship a trained model directory as one of the toy-world weights (``toyworld/weights/<name>``).

Training keeps float32 master weights; the shipped copy stores its floating-point tensors in
float16, which halves the repository's weight files. Every loader casts them back
(``ModelSources`` loads at its ``dtype``, float32 by default; training loads float32 master
weights), so a shipped model computes with the float16-rounded values of the trained ones.
Everything else (configs, tokenizer, ``training.json`` with the loss curve) is copied as is::

    python -m toyworld.ship runs/cam_apm-model streaming
    python -m toyworld.ship runs/conc_cond-model ablation/conc_cond   # an ablation row's model
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models.dtypes import DTYPES
from models.errors import ConfigError, require
from toyworld.weights import ABLATION_MODELS, MODELS, WEIGHTS_DIR

SHIP_DTYPES = {name: DTYPES[name] for name in ("float16", "float32")}
"""The dtypes weights may be shipped in (bfloat16's 8-bit mantissa would lose too much)."""


def cast_safetensors(path: Path, dtype: torch.dtype) -> None:
    """Rewrite one safetensors file with its floating-point tensors in ``dtype``; any integer
    tensors and the file's metadata are kept."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)


def ship(source: str | Path, name: str, dtype: str = "float16", weights_dir: str | Path = WEIGHTS_DIR) -> Path:
    """Copy the trained model directory ``source`` to ``weights_dir/name`` with its weights in
    ``dtype``. The new directory is built beside the old one and swapped in whole."""
    source, weights_dir = Path(source), Path(weights_dir)
    require(name in MODELS + ABLATION_MODELS, "name", name, f"one of {MODELS + ABLATION_MODELS}")
    require(dtype in SHIP_DTYPES, "dtype", dtype, f"one of {sorted(SHIP_DTYPES)}")
    if not (source / "streamingt2v.json").is_file() or not (source / "training.json").is_file():
        raise ConfigError("source", str(source), "a model directory written by `streamingt2v train --out`")
    target = weights_dir / name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        built = staging / target.name
        shutil.copytree(source, built)
        for file in sorted(built.rglob("*.safetensors")):
            cast_safetensors(file, SHIP_DTYPES[dtype])
        if target.exists():
            target.rename(staging / "replaced")  # removed with the staging directory
        built.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m toyworld.ship", description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="a trained model directory (streamingt2v train --out)")
    p.add_argument("name", help=f"one of {MODELS + ABLATION_MODELS}")
    p.add_argument("--dtype", default="float16", help=f"one of {sorted(SHIP_DTYPES)}")
    args = p.parse_args(argv)
    try:
        target = ship(args.source, args.name, args.dtype)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(f"{target}: {size / 2**20:.1f} MiB ({args.dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Export one training checkpoint as a loadable model directory, to evaluate a run part-way
(``studies.conditioning_probe``, the ablation rows, ``streamingt2v generate``) while it goes on.

A checkpoint is a directory holding ``trainable.safetensors``, ``optimizer.pt`` and
``training_state.json``: ``RUN_DIR/checkpoints/step-N`` of ``--engine local``, or
``RUN_DIR/train/checkpoint_*`` of Ray Train, on a local path or an object store (``s3://``). The
stage, init model and options come from the checkpoint's own record, so the export is the model
the run would have exported had it stopped at that step. The run itself is only read.

    python -m training.export_checkpoint CHECKPOINT --out MODEL_DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from infra import storage
from models.errors import ConfigError
from training.ray_train import CHECKPOINT_FILES, download_checkpoint, export_model
from training.run import STATE_FILE, TrainConfig, TrainingRun


def export_checkpoint(checkpoint: str, out: str, device: str = "cpu") -> int:
    """Load ``checkpoint`` into a fresh :class:`TrainingRun` of its recorded config and export it
    to ``out`` (local or object store); returns the checkpoint's step."""
    missing = [name for name in CHECKPOINT_FILES if not storage.exists(storage.join(checkpoint, name))]
    if missing:
        raise ConfigError("checkpoint", checkpoint,
                          f"a complete training checkpoint directory (with {', '.join(CHECKPOINT_FILES)}; "
                          f"missing {', '.join(missing)})")
    with tempfile.TemporaryDirectory() as tmp:
        local = download_checkpoint(checkpoint, Path(tmp)) if "://" in checkpoint else Path(checkpoint)
        config = TrainConfig.from_dict(json.loads((local / STATE_FILE).read_text())["config"])
        if config.stage == "vae":  # its export calibrates the latent scaling on frames the run draws
            raise ConfigError("checkpoint", checkpoint,
                              "a checkpoint of a stage other than vae (finish a VAE run with --out instead)")
        run = TrainingRun(config, device)
        run.load_checkpoint(local)
    export_model(run, out)
    return run.step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export_checkpoint", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint directory (local path or s3://)")
    parser.add_argument("--out", required=True, help="model directory to write (local path or s3://)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        step = export_checkpoint(args.checkpoint, args.out, args.device)
    except ConfigError as exc:
        print(f"training.export_checkpoint: error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.checkpoint} (step {step}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

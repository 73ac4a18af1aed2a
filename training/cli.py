"""``streamingt2v train``: one training stage, in-process or on Ray Train.

    streamingt2v train --stage cam --init BASE_DIR --data s3://bucket/clips.parquet \\
        --steps 400000 --batch-size 8 --lr 5e-5 --fps 3 --run-dir RUN --out MODEL_DIR [--engine ray]

Re-running the same command resumes from the newest checkpoint in ``--run-dir``. The flags of
the stage's options are derived from :class:`training.run.TrainConfig`.
"""

from __future__ import annotations

import argparse
import sys

from infra.params import add_arguments, from_arguments
from models.errors import ConfigError
from training.run import TrainConfig

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamingt2v train", description=__doc__.split("\n\n")[0])
    add_arguments(p, TrainConfig)
    run = p.add_argument_group("where and how the stage runs")
    run.add_argument("--run-dir", required=True, help="checkpoints and metrics (local path or s3:// for --engine ray)")
    run.add_argument("--out", help="where the trained model is exported")
    run.add_argument("--engine", default="ray", help="ray (Ray Train TorchTrainer) | local (this process)")
    run.add_argument("--workers", type=int, default=1, help="Ray Train workers (data parallel)")
    run.add_argument("--use-gpu", action="store_true")
    run.add_argument("--accelerator-type", help="e.g. H100 (Ray accelerator_type)")
    run.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    return p


def train_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        config = TrainConfig.from_dict(from_arguments(args, TrainConfig))
        if args.engine == "local":
            from pathlib import Path

            from training.run import train_in_process

            Path(args.run_dir).mkdir(parents=True, exist_ok=True)
            train_in_process(config, args.run_dir, args.out, device="cuda" if args.use_gpu else "cpu")
        elif args.engine == "ray":
            from training.ray_train import RayTrainSettings, train_on_ray

            result = train_on_ray(config, args.run_dir, args.out, RayTrainSettings(
                num_workers=args.workers, use_gpu=args.use_gpu, accelerator_type=args.accelerator_type,
                ray_address=args.ray_address))
            print(f"final loss {result['loss']:.4f} at step {result['step']}")
        else:
            raise ConfigError("engine", args.engine, "one of 'ray', 'local'")
    except ConfigError as exc:
        print(f"streamingt2v train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0

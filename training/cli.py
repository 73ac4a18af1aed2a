"""``streamingt2v train``: one training stage, in-process or on Ray Train.

    streamingt2v train --stage cam --init BASE_DIR --data s3://bucket/clips.parquet \\
        --steps 400000 --batch-size 8 --lr 5e-5 --fps 3 --run-dir RUN --out MODEL_DIR [--engine ray]

Re-running the same command resumes from the newest checkpoint in ``--run-dir``.
"""

from __future__ import annotations

import argparse
import sys

from models.errors import ConfigError

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamingt2v train", description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", required=True, help="vae | base | cam | cam_apm | conc_cond | refiner | clip")
    p.add_argument("--steps", type=int, required=True, help="total optimiser steps of the stage")
    p.add_argument("--init", help="model directory the stage starts from")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--data", default="toyworld", help="'toyworld' or a clip manifest (Parquet, local or s3://)")
    p.add_argument("--fps", type=float, default=3.0, help="frame rate clips are sampled at (paper: 3)")
    p.add_argument("--batch-size", type=int, default=8, help="global batch size (paper: 8)")
    p.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate (paper: 5e-5)")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear lr warmup over the first N steps (0: none)")
    p.add_argument("--decay-steps", type=int, default=0,
                   help="linear lr decay to ~0 over the last N steps (0: constant lr, the paper's); adding it "
                        "to a constant-lr run and re-running resumes into the decay")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--mixed-precision", default="no", help="no | bf16 | fp16")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--train-text-encoder", action="store_true", help="base stage from scratch only")
    p.add_argument("--tokenizer", default=None, choices=("toyworld",),
                   help="base stage with --train-text-encoder: one token per toy-world word (toyworld.vocabulary)")
    p.add_argument("--timestep-sampling", default="uniform",
                   help="uniform (paper) | cubic (biased to high noise, as T2I-Adapter trains its condition branch)")
    p.add_argument("--offset-noise", type=float, default=0.0,
                   help="std of a per-(video, channel) offset added to the training noise; 0 (paper) to 1. "
                        "Hides a clip's mean colour from x_t, so CAM has to carry it")
    p.add_argument("--decoded-condition", action="store_true",
                   help="cam / cam_apm / conc_cond: condition on frames decoded from the clip's latents, as "
                        "sampling does, instead of the clip's frames (the paper's); matters with a lossy VAE")
    p.add_argument("--condition-noise", type=float, default=0.0,
                   help="with --decoded-condition: degrade the conditioning latents by N(0, s^2), s ~ U(0, this) per "
                        "clip, before decoding; 0 (paper) to 1. A stand-in for a long video's drift, so that stage 2's "
                        "APM learns to use its anchor")
    p.add_argument("--apm-lr", type=float, default=None,
                   help="cam_apm: the learning rate of APM's gates, resampler and mixer (default: --lr, the paper's); "
                        "a zero-initialised gate moves at most about its lr per step")
    p.add_argument("--control-text", default=None,
                   help="stage cam: what CAM's control branch reads, prompt (the paper's) or empty (the empty "
                        "prompt's encoding, so that guidance cannot amplify a text/null difference in it); default: "
                        "the preset's")
    p.add_argument("--main-branch", default="frozen",
                   help="stage cam: what it trains of the main branch besides CAM, frozen (the paper's stage 1), "
                        "spatial (stage 2's layers) or all (as Conc-Cond does); beyond the paper, for comparing "
                        "the two conditionings at equal trainable parameters")
    p.add_argument("--apm-only", action="store_true",
                   help="stage cam_apm: train APM alone (its gates, resampler and mixer), all else frozen; beyond "
                        "the paper, a warm-up on drifted conditions (--condition-noise) that opens APM's gates "
                        "before a full stage 2")
    p.add_argument("--image-encoder", default=None,
                   help="cam / conc_cond / cam_apm: the CLIP (directory or hub id) whose image tower embeds APM's "
                        "anchor, e.g. a --stage clip result; default: the init model's, else the preset's")
    p.add_argument("--run-dir", required=True, help="checkpoints and metrics (local path or s3:// for --engine ray)")
    p.add_argument("--out", help="where the trained model is exported")
    p.add_argument("--engine", default="ray", help="ray (Ray Train TorchTrainer) | local (this process)")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (data parallel)")
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--accelerator-type", help="e.g. H100 (Ray accelerator_type)")
    p.add_argument("--ray-address", help="an existing Ray cluster (default: start a local one)")
    return p


def train_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        from training.run import TrainConfig

        config = TrainConfig(stage=args.stage, steps=args.steps, init=args.init, preset=args.preset, data=args.data,
                             fps=args.fps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                             decay_steps=args.decay_steps, seed=args.seed,
                             checkpoint_every=args.checkpoint_every, mixed_precision=args.mixed_precision,
                             gradient_checkpointing=args.gradient_checkpointing,
                             train_text_encoder=args.train_text_encoder, timestep_sampling=args.timestep_sampling,
                             offset_noise=args.offset_noise, tokenizer=args.tokenizer,
                             decoded_condition=args.decoded_condition, condition_noise=args.condition_noise,
                             apm_lr=args.apm_lr, control_text=args.control_text, main_branch=args.main_branch,
                             apm_only=args.apm_only,
                             image_encoder=args.image_encoder)
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

"""``streamingt2v evaluate``: the paper's metrics for one video or for every video of a manifest.

    streamingt2v evaluate VIDEO_OR_MANIFEST [--prompt P] [--clip-model DIR] [--aesthetic-mlp FILE]
                          [--aesthetic-clip-model DIR] [--face-detector FILE] [--face-recognizer FILE]
                          [--flow-estimator dis-lk|farneback] [--raft-weights FILE] [--flow-size 720] [--json]

A ``.parquet`` argument is a manifest: its ``video_uri`` and ``prompt`` columns are read and every
row's video is evaluated. Prints a table, one row per video and one column per metric ("missing"
where a metric could not be computed; the reasons go to stderr), or JSON with ``--json``. Bad input
exits with status 2 and one line naming the argument, before any video is evaluated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluation.metrics import METRIC_NAMES, FlowConfig, ModelPaths, evaluate_video
from infra import storage
from models.errors import ConfigError, require

EXIT_BAD_INPUT = 2
MANIFEST_COLUMNS = ("video_uri", "prompt")
FLOW_SIZES = (16, 4096)
FLOW_METHODS = ("dis-lk", "farneback")  # RAFT is chosen by giving its weights


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamingt2v evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("video_or_manifest", help="a video file/URI, or a Parquet manifest (video_uri, prompt)")
    parser.add_argument("--prompt", help="the video's prompt (CLIP score); a manifest has its own")
    parser.add_argument("--clip-model", help="local transformers CLIP directory (CLIP score, aesthetic embeddings)")
    parser.add_argument("--aesthetic-mlp", help="LAION aesthetic predictor state dict (.pth or .safetensors)")
    parser.add_argument("--aesthetic-clip-model", help="CLIP directory for the aesthetic MLP (default: --clip-model)")
    parser.add_argument("--face-detector", help="OpenCV YuNet face detector .onnx (re-id)")
    parser.add_argument("--face-recognizer", help="OpenCV SFace face recognizer .onnx (re-id)")
    parser.add_argument("--flow-estimator", default="dis-lk",
                        help="dis-lk (validated on videos with known motion, docs/metrics.md) | farneback")
    parser.add_argument("--raft-weights", help="torchvision RAFT-large state dict: RAFT flow instead")
    parser.add_argument("--flow-size", type=int, default=720,
                        help="frames are resized to SIZE x SIZE for flow (paper: 720)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _check_local(option: str, value: str | None) -> None:
    if value is not None and not Path(value).exists():
        raise ConfigError(option, value, "an existing local file or directory")


def _jobs(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(video URI, prompt) pairs to evaluate, every video checked to exist."""
    target = args.video_or_manifest
    require(storage.exists(target), "video_or_manifest", target, "an existing video file or Parquet manifest")
    if not target.endswith(".parquet"):
        return [(target, args.prompt)]
    require(args.prompt is None, "prompt", args.prompt, "omitted for a manifest (its prompt column is used)")
    jobs = _read_manifest(target)
    for row, (uri, _) in enumerate(jobs):
        require(storage.exists(uri), f"video_uri[{row}]", uri, "an existing video file")
    return jobs


def _read_manifest(uri: str) -> list[tuple[str, str | None]]:
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(uri)
    try:
        table = pq.read_table(path, filesystem=fs, columns=list(MANIFEST_COLUMNS))
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError("video_or_manifest", uri, f"a Parquet manifest with columns {MANIFEST_COLUMNS}") from exc
    return list(zip(table.column("video_uri").to_pylist(), table.column("prompt").to_pylist()))


def format_table(results: list[dict]) -> str:
    """One row per video, one column per metric, "missing" where a value is None."""
    def cell(value: float | int | None) -> str:
        return "missing" if value is None else str(value) if isinstance(value, int) else f"{value:.4g}"

    rows = [["video", *METRIC_NAMES]]
    rows += [[r["video"], *(cell(r["metrics"][name]) for name in METRIC_NAMES)] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def evaluate_main(argv: list[str]) -> int:
    """Entry point of ``streamingt2v evaluate``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        require(args.flow_estimator in FLOW_METHODS, "flow_estimator", args.flow_estimator,
                f"one of {list(FLOW_METHODS)} (or give --raft-weights)")
        require(FLOW_SIZES[0] <= args.flow_size <= FLOW_SIZES[1], "flow_size", args.flow_size,
                f"an integer in [{FLOW_SIZES[0]}, {FLOW_SIZES[1]}]")
        for option in ("clip_model", "aesthetic_mlp", "aesthetic_clip_model", "face_detector",
                       "face_recognizer", "raft_weights"):
            _check_local(option, getattr(args, option))
        jobs = _jobs(args)
    except ConfigError as exc:
        print(f"streamingt2v evaluate: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    models = ModelPaths(clip=args.clip_model, aesthetic_clip=args.aesthetic_clip_model,
                        aesthetic_mlp=args.aesthetic_mlp, face_detector=args.face_detector,
                        face_recognizer=args.face_recognizer)
    flow = FlowConfig(size=(args.flow_size, args.flow_size), raft_weights=args.raft_weights,
                      method=args.flow_estimator)
    results = [{"video": uri, "prompt": prompt, **evaluate_video(uri, prompt, models, flow)} for uri, prompt in jobs]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(format_table(results))
    print(f"flow: {flow.name} at {args.flow_size}x{args.flow_size}", file=sys.stderr)
    reasons = {(name, reason) for r in results for name, reason in r["missing"].items()}
    for name, reason in sorted(reasons):
        print(f"missing {name}: {reason}", file=sys.stderr)
    return 0

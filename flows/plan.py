"""``streamingt2v plan``: pool sizes per GPU type for a target of videos per hour, and a simulation
of the engine's scheduling policy that checks them (stages/capacity.py).

    streamingt2v plan --speeds speeds.yaml --videos-per-hour 200 [--num-frames 240] [--plot queues.png]
    streamingt2v plan --bench outputs/bench/history.parquet --videos-per-hour 50

``--speeds`` is a YAML or JSON file::

    step_s:          # seconds per denoising step, per stage and GPU type (streamingt2v bench)
      init:   {L40S: 0.21, H100: 0.09}
      extend: {L40S: 0.27, H100: 0.12}
      refine: {H100: 0.85, H200: 0.74}
    overhead_s: {init: 2, extend: 6, refine: 20}      # optional, per video
    price_per_hour: {L40S: 1.1, H100: 2.9, H200: 3.6}  # optional: cost per video, cheapest type

``--bench`` reads the newest row of a bench history (its ``<stage>_step_s``; the GPU type is the
row's device unless ``--gpu-type`` names it); with ``--mfu`` and ``--peak-tflops TYPE=TFLOPS`` the
speeds come from the row's FLOP per step instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from models.errors import ConfigError, require
from stages.capacity import PoolPlan, Simulation, Speeds, Workload, plan_pools, plot_queues, simulate
from stages.scheduling import STAGE_ORDER


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="pool sizes per GPU type for a target of videos per hour, checked by simulation")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--speeds", help="YAML or JSON: step_s per stage and GPU type, overhead_s, price_per_hour")
    source.add_argument("--bench", help="a bench history (Parquet): the newest row's seconds or FLOP per step")
    p.add_argument("--gpu-type", help="with --bench: the GPU type its row measured (default: the row's device)")
    p.add_argument("--mfu", type=float, help="with --bench: speeds from FLOP per step at this MFU ...")
    p.add_argument("--peak-tflops", action="append", default=[], metavar="TYPE=TFLOPS",
                   help="... and these GPU types' peak TFLOP/s (repeatable)")
    p.add_argument("--videos-per-hour", type=float, required=True)
    p.add_argument("--preset", default="modelscope")
    p.add_argument("--num-frames", type=int, default=240)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of init and extend (default: the paper's 50)")
    p.add_argument("--refine-steps", type=int, default=50, help="the refiner's step spacing (T' = 600 runs 30 of 50)")
    p.add_argument("--no-refine", dest="refine", action="store_false")
    p.add_argument("--max-videos-in-flight", type=int, default=3, help="the engine's per-stage bound (pools config)")
    p.add_argument("--simulate", type=int, default=1000, metavar="VIDEOS", help="videos in the simulated batch")
    p.add_argument("--plot", help="write the simulated queue lengths over time to this PNG")
    p.add_argument("--json", action="store_true", help="print the plan and simulation as JSON")


def speeds_from(args: argparse.Namespace) -> Speeds:
    if args.speeds:
        path = Path(args.speeds)
        if not path.is_file():
            raise ConfigError("speeds", args.speeds, "an existing YAML or JSON file")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict) or set(data) - {"step_s", "overhead_s", "price_per_hour"}:
            raise ConfigError("speeds", sorted(data) if isinstance(data, dict) else data,
                              "a mapping with step_s and optionally overhead_s, price_per_hour")
        return Speeds(**data)
    from infra import storage

    if not storage.exists(args.bench):
        raise ConfigError("bench", args.bench, "an existing bench history (streamingt2v bench --history)")
    row = storage.read_table(args.bench).to_pylist()[-1]
    if args.mfu is not None:
        peaks = dict(_pair(text) for text in args.peak_tflops)
        require(bool(peaks), "peak_tflops", args.peak_tflops, "at least one TYPE=TFLOPS with --mfu")
        return Speeds.from_flops({s: row[f"{s}_step_tflop"] for s in STAGE_ORDER}, peaks, args.mfu)
    gpu = args.gpu_type or row.get("device_name") or "device"
    return Speeds({s: {gpu: row[f"{s}_step_s"]} for s in STAGE_ORDER})


def _pair(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise ConfigError("peak_tflops", text, "TYPE=TFLOPS, e.g. H100=989") from None


def report(workload: Workload, plan: PoolPlan, sim: Simulation) -> dict[str, Any]:
    steps = workload.steps_per_video()
    return {"workload": {**workload.__dict__, **steps},
            "plan": {"pools": {s: {"gpu_type": plan.gpu_type[s], "actors": plan.size[s],
                                   "seconds_per_video": round(plan.stage_s[s], 2)} for s in plan.size},
                     "refine_concurrency": plan.refine_concurrency, "gpus": plan.gpus,
                     "videos_per_hour": round(plan.videos_per_hour, 2),
                     "cost_per_video": None if plan.cost_per_video is None else round(plan.cost_per_video, 4)},
            "simulation": {"videos": sim.videos, "wall_h": round(sim.wall_s / 3600, 3),
                           "videos_per_hour": round(sim.videos_per_hour, 2),
                           "utilisation": {s: round(u, 3) for s, u in sim.utilisation.items()},
                           "max_waiting": {s: max(q[s] for _, q in sim.queue) for s in sim.utilisation},
                           "median_latency_s": round(sorted(sim.latency_s)[len(sim.latency_s) // 2], 1)}}


def run(args: argparse.Namespace) -> int:
    require(args.simulate >= 1, "simulate", args.simulate, "an integer >= 1")
    workload = Workload(args.preset, args.num_frames, args.steps, args.refine_steps, args.refine)
    workload.request()  # validates the parameters the way a request does
    plan = plan_pools(workload, speeds_from(args), args.videos_per_hour)
    sim = simulate(plan, args.simulate, args.max_videos_in_flight)
    out = report(workload, plan, sim)
    if args.plot:
        plot_queues(sim, args.plot)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    w, p, s = out["workload"], out["plan"], out["simulation"]
    print(f"{w['num_frames']} frames ({w['chunks']} chunks, {w['refine_chunks'] if workload.refine else 0} refine "
          f"chunks), {w['steps']} steps; target {args.videos_per_hour:g} videos per hour")
    for stage, pool in p["pools"].items():
        print(f"  {stage:7} {pool['actors']:4d} x {pool['gpu_type']:10} {pool['seconds_per_video']:9.1f} s per video"
              + (f" (in {p['refine_concurrency']} groups)" if stage == "refine" else ""))
    cost = "" if p["cost_per_video"] is None else f", {p['cost_per_video']:.4f} per video"
    print(f"  {p['gpus']} GPUs, {p['videos_per_hour']:.1f} videos per hour{cost}")
    print(f"simulated {s['videos']} videos: {s['wall_h']:.2f} h, {s['videos_per_hour']:.1f} per hour; busy "
          + ", ".join(f"{k} {100 * v:.0f}%" for k, v in s["utilisation"].items())
          + "; most waiting " + ", ".join(f"{k} {v}" for k, v in s["max_waiting"].items()))
    if args.plot:
        print(f"queues: {args.plot}")
    return 0

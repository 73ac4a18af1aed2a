"""The capacity simulator against a real batch on this machine: predicted and measured wall time.

    python -m benchmarks.capacity_check --videos 8 --num-frames 48 --steps 4 [--refine]

On a local Ray cluster with the engine (tiny preset, trained toy weights): one video alone gives
each stage's seconds per video (as seconds per step, the simulator's input); then a batch of
``--videos`` other videos runs through the engine, and the simulator (stages/capacity.py, the
engine's own scheduling policy) predicts its wall time from those seconds and the same pools.
Prints both and the relative error. Ray start-up and the pools' model loading happen before the
timed batch (a long-lived engine), as on a cluster.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import ray

from infra.cluster import ClusterConfig, PoolConfig
from models.request import GenerationRequest
from stages.capacity import Speeds, Workload, plan_for, simulate
from stages.engine import connect_engine, follow_videos, stop_engine
from stages.pools import start_ray
from stages.sources import ModelSources
from stages.workers import VideoJob

PROMPT = "a {} circle moving left on a striped background"
COLOURS = ("red", "blue", "green", "white", "yellow", "magenta", "cyan", "orange")


def run_batch(engine, out: str, workload: Workload, seeds: range) -> tuple[float, dict]:
    jobs = [VideoJob(GenerationRequest(PROMPT.format(COLOURS[s % len(COLOURS)]), seed=s,
                                       num_frames=workload.num_frames, num_inference_steps=workload.steps,
                                       refine=workload.refine, refine_steps=workload.refine_steps,
                                       preset=workload.preset).params(), out) for s in seeds]
    t0 = time.perf_counter()
    ray.get(engine.submit.remote(jobs, "batch", "capacity-check"))
    last = follow_videos(engine, [j.request.video_id for j in jobs])
    wall = time.perf_counter() - t0
    assert all(s["status"] == "done" for s in last.values()), [s["error"] for s in last.values()]
    return wall, last


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--num-frames", type=int, default=48)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--refine", action="store_true", help="refine too (the refine pool is one actor)")
    parser.add_argument("--refine-steps", type=int, default=10)
    args = parser.parse_args(argv)
    workload = Workload("tiny", args.num_frames, args.steps, args.refine_steps, args.refine)
    pool = PoolConfig(size=1, num_cpus=0.5)
    cluster = ClusterConfig(init=pool, extend=pool, refine=pool)
    start_ray(num_cpus=2)
    stop_engine()
    engine = connect_engine(ModelSources(), cluster)
    with tempfile.TemporaryDirectory(prefix="capacity-") as out:
        run_batch(engine, out, workload, range(1000, 1001))  # warm-up: the pools load their models
        _, alone = run_batch(engine, out, workload, range(2000, 2001))
        (snap,) = alone.values()
        stages = ("init", "extend", "refine") if args.refine else ("init", "extend")
        work = workload.actor_steps()
        speeds = Speeds({s: {"cpu": snap["timings"][f"{s}_s"] / work[s]} for s in stages}
                        | ({} if args.refine else {"refine": {"cpu": 1.0}}))
        plan = plan_for(workload, speeds, {s: 1 for s in stages})
        predicted = simulate(plan, args.videos, cluster.max_videos_in_flight)
        measured, _ = run_batch(engine, out, workload, range(args.videos))
    stop_engine()
    result = {"videos": args.videos, "num_frames": args.num_frames, "steps": args.steps, "refine": args.refine,
              "stage_s_alone": {s: round(snap["timings"][f"{s}_s"], 2) for s in stages},
              "predicted_wall_s": round(predicted.wall_s, 1), "measured_wall_s": round(measured, 1),
              "error": round(predicted.wall_s / measured - 1, 3),
              "simulated_utilisation": {s: round(u, 3) for s, u in predicted.utilisation.items()}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

"""Speed-up of pipeline-parallel refine: one wide video refined by N refine actors vs 1.

    python -m benchmarks.refine_parallel --num-frames 121 --workers 2 --refine-steps 10

Prints wall-clock seconds per layout, the speed-up ratio and whether the results are
bit-identical. Each actor uses one torch thread (the local pool profile), so on a 2-core machine
two actors can at best halve the time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import ray

from infra.cluster import PoolConfig
from models.refinement import sdedit_timesteps
from models.request import GenerationRequest
from stages.pools import make_pool, refine_pipeline_parallel, start_ray
from stages.sources import ModelSources
from stages.workers import RefineWorker, VideoJob


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-frames", type=int, default=121)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--refine-steps", type=int, default=10, help="DDIM spacing (10: 6 steps from T'=600)")
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()

    start_ray(num_cpus=max(2, args.workers))
    sources = ModelSources(preset=args.preset)
    workers = make_pool(RefineWorker, PoolConfig(size=args.workers, num_cpus=1, torch_threads=1), sources)
    request = GenerationRequest("Camera moving in a wide bright ice cave", num_frames=args.num_frames, seed=0,
                                refine_steps=args.refine_steps, preset=args.preset)
    job = VideoJob(request.params(), tempfile.mkdtemp(prefix="refine-bench-"))
    job.store.save_low_res(np.random.default_rng(0).integers(0, 256, (args.num_frames, 64, 64, 3), dtype=np.uint8))
    config = sources.refine_config(num_inference_steps=args.refine_steps)
    plan = config.plan(args.num_frames)
    steps = len(sdedit_timesteps(ray.get(workers[0].schedule.remote()), config))
    ray.get([w.schedule.remote() for w in workers])  # models loaded before timing

    timings, pixels = {}, {}
    for n in (1, args.workers):
        t0 = time.perf_counter()
        result = ray.get(refine_pipeline_parallel(job, plan, workers[:n], steps, return_frames=True))
        timings[n] = time.perf_counter() - t0
        pixels[n] = result["pixels"]
    print(json.dumps({
        "num_frames": args.num_frames, "chunks": len(plan), "steps": steps, "workers": args.workers,
        "seconds_1_worker": round(timings[1], 2), f"seconds_{args.workers}_workers": round(timings[args.workers], 2),
        "speedup": round(timings[1] / timings[args.workers], 3),
        "bit_identical": bool(pixels[1].tobytes() == pixels[args.workers].tobytes()),
    }, indent=2))


if __name__ == "__main__":
    main()

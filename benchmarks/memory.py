"""Peak memory of one video made in one process, normal vs ``--low-memory``.

    python -m benchmarks.memory --preset modelscope --num-frames 48 --device cuda --dtype float16
    python -m benchmarks.memory --preset tiny --num-frames 48            # a quick run on CPU

Each mode runs in its own fresh process (so one mode's peak does not hide the other's), with
random weights of the preset's real sizes (memory does not depend on weight values), one DDIM step
per chunk and one SDEdit step (the peak of a step does not depend on how many follow). Prints,
per mode, the peak resident set size of the process and, on a GPU, the peak of allocated GPU
memory, and whether the two modes made byte-identical videos.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time


def run_one(args: argparse.Namespace) -> dict:
    import torch

    from infra.run_store import RunStore
    from models.request import GenerationRequest
    from stages.generate import Stages, generate_video
    from stages.sources import ModelSources

    sources = ModelSources(preset=args.preset, weights="random", device=args.device, dtype=args.dtype,
                           low_memory=args.low_memory)
    # refine_steps 1: a step spacing of 1000, i.e. the single SDEdit step at T' = 600
    request = GenerationRequest("A camel resting on the snow field.", num_frames=args.num_frames, seed=0,
                                num_inference_steps=1, refine_steps=1, preset=args.preset)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        record = generate_video(request, Stages.load(sources), RunStore(out, request.video_id))
        digest = hashlib.sha256(open(record["artifacts"]["video"], "rb").read()).hexdigest()[:16]
    peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"low_memory": args.low_memory, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "peak_gpu_allocated_gib": peak_gpu, "seconds": time.perf_counter() - t0, "video_sha256": digest,
            "frames": record["frames"], "size": record["size"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="modelscope")
    parser.add_argument("--num-frames", type=int, default=48)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--low-memory", action="store_true", help=argparse.SUPPRESS)  # the child's mode
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args)))
        return
    rows = []
    for low_memory in (False, True):
        argv = [sys.executable, "-m", "benchmarks.memory", "--child", "--preset", args.preset, "--num-frames",
                str(args.num_frames), "--device", args.device, "--dtype", args.dtype] + (["--low-memory"] * low_memory)
        done = subprocess.run(argv, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"| mode | peak RSS (GiB) | peak GPU allocated (GiB) | seconds |  ({args.preset}, {args.num_frames} frames, "
          f"{rows[0]['size']['width']}x{rows[0]['size']['height']}, {args.device} {args.dtype})")
    print("|---|---|---|---|")
    for row in rows:
        gpu = f"{row['peak_gpu_allocated_gib']:.2f}" if row["peak_gpu_allocated_gib"] is not None else "-"
        print(f"| {'low memory' if row['low_memory'] else 'normal'} | {row['peak_rss_gib']:.2f} | {gpu} | "
              f"{row['seconds']:.0f} |")
    print(f"same video: {rows[0]['video_sha256'] == rows[1]['video_sha256']}")


if __name__ == "__main__":
    main()

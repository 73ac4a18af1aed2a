"""Peak memory of one video made in one process, normal vs ``--low-memory``.

    python -m benchmarks.memory --preset modelscope --num-frames 48 --device cuda --dtype float16
    python -m benchmarks.memory --preset tiny --num-frames 48            # a quick run on CPU

Each mode runs in its own fresh process (so one mode's peak does not hide the other's), with
random weights of the preset's real sizes (memory does not depend on weight values), one DDIM step
per chunk and one SDEdit step (the peak of a step does not depend on how many follow). Prints,
per mode, the resident set size once the models are loaded, its peak while the video is made
(the peak is reset after loading, so building the random models does not hide it; Linux) and,
on a GPU, the same two figures for allocated GPU memory, and whether the two modes made
byte-identical videos.

``--rows FILE`` keeps each finished mode's figures (one JSON line per configuration and mode) and
reuses them, so a run of several hours that is stopped resumes at the mode it had not finished.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_gib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), GiB."""
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith(field + ":"))
    return kib / 2**20


def _release_freed_heap() -> None:
    """Give the heap that building the models freed back to the OS (glibc), so that the loaded
    figure is the models, not what their float32 construction left behind."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> None:
    """Make VmHWM the current RSS (Linux: writing 5 to clear_refs resets the peak)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


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
    gpu = torch.cuda.is_available() and args.device.startswith("cuda")
    stages = Stages.load(sources)
    _release_freed_heap()
    loaded = {"loaded_rss_gib": _status_gib("VmRSS"), "load_peak_rss_gib": _status_gib("VmHWM"),
              "loaded_gpu_allocated_gib": torch.cuda.memory_allocated() / 2**30 if gpu else None}
    _reset_peak_rss()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        record = generate_video(request, stages, RunStore(out, request.video_id))
        digest = hashlib.sha256(open(record["artifacts"]["video"], "rb").read()).hexdigest()[:16]
    return {"low_memory": args.low_memory, **loaded, "peak_rss_gib": _status_gib("VmHWM"),
            "peak_gpu_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
            "seconds": time.perf_counter() - t0, "video_sha256": digest, "frames": record["frames"],
            "size": record["size"]}


def _mode_row(args: argparse.Namespace, low_memory: bool) -> dict:
    """One mode's figures: from ``--rows`` when that configuration and mode finished before, else
    measured in a fresh child process (and appended to ``--rows``)."""
    config = {"preset": args.preset, "num_frames": args.num_frames, "device": args.device, "dtype": args.dtype,
              "low_memory": low_memory}
    rows_file = Path(args.rows) if args.rows else None
    if rows_file is not None and rows_file.exists():
        for line in rows_file.read_text().splitlines():
            row = json.loads(line)
            if all(row.get(key) == value for key, value in config.items()):
                return row
    argv = [sys.executable, "-m", "benchmarks.memory", "--child", "--preset", args.preset, "--num-frames",
            str(args.num_frames), "--device", args.device, "--dtype", args.dtype] + (["--low-memory"] * low_memory)
    done = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True)  # its warnings reach the user
    row = {**config, **json.loads(done.stdout.strip().splitlines()[-1])}
    if rows_file is not None:
        rows_file.parent.mkdir(parents=True, exist_ok=True)
        with rows_file.open("a") as out:
            out.write(json.dumps(row) + "\n")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="modelscope")
    parser.add_argument("--num-frames", type=int, default=48)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rows", help="JSON-lines file keeping each finished mode's figures; reused on the next run")
    parser.add_argument("--low-memory", action="store_true", help=argparse.SUPPRESS)  # the child's mode
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args)))
        return
    rows = [_mode_row(args, low_memory) for low_memory in (False, True)]
    print(f"({args.preset}, {args.num_frames} frames, {rows[0]['size']['width']}x{rows[0]['size']['height']}, "
          f"{args.device} {args.dtype}; GiB)")
    print("| mode | RSS loaded | peak RSS making the video | GPU allocated loaded | peak GPU allocated making the video "
          "| seconds |")
    print("|---|---|---|---|---|---|")

    def gib(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"
    for row in rows:
        print(f"| {'low memory' if row['low_memory'] else 'normal'} | {gib(row['loaded_rss_gib'])} | "
              f"{gib(row['peak_rss_gib'])} | {gib(row['loaded_gpu_allocated_gib'])} | "
              f"{gib(row['peak_gpu_allocated_gib'])} | {row['seconds']:.0f} |")
    print(f"building the random models peaked at {max(row['load_peak_rss_gib'] for row in rows):.2f} GiB RSS")
    print(f"same video: {rows[0]['video_sha256'] == rows[1]['video_sha256']}")


if __name__ == "__main__":
    main()

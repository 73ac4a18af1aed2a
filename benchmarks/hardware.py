"""The physical limit every figure is compared with: a device's peak FLOP/s.

GPUs: dense (no sparsity) datasheet peaks of the tensor cores for bf16/fp16 and tf32, and of the
CUDA cores for plain fp32. PyTorch runs fp32 convolutions on tf32 tensor cores by default
(``torch.backends.cudnn.allow_tf32``), so fp32 runs are compared with the tf32 peak when that is
on. Unknown GPUs and CPUs get a measured peak instead: the best rate of large square matmuls in
the run's dtype and thread count, labelled ``measured``.

``python -m benchmarks.hardware`` prints, per dtype, that peak and the rates of the ops a video
UNet spends its time in (:func:`op_rates`): on a CPU without native half-precision arithmetic,
bfloat16 and float16 are far slower than float32.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.dtypes import DTYPES

# name fragment -> dense peak FLOP/s by precision (NVIDIA datasheets, SXM variants where several exist).
GPU_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "L40S": {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
}
PRECISION = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class Peak:
    device: str  # e.g. "NVIDIA H100 80GB HBM3" or "cpu (16 threads)"
    precision: str  # bf16 | fp16 | tf32 | fp32
    flops: float  # FLOP/s
    source: str  # "datasheet" | "measured matmul"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def peak(device: torch.device, dtype: torch.dtype) -> Peak:
    """The peak this run is measured against (datasheet for known GPUs, else measured)."""
    name = device_name(device)
    precision = PRECISION[dtype]
    if device.type == "cuda":
        if precision == "fp32" and torch.backends.cudnn.allow_tf32:
            precision = "tf32"
        for fragment, peaks in GPU_PEAKS.items():
            if fragment in name:
                return Peak(name, precision, peaks[precision], "datasheet")
    return Peak(name, PRECISION[dtype], measured_matmul_peak(device, dtype), "measured matmul")


def measured_matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 1.0) -> float:
    """Best FLOP/s of n x n matmuls (2 n^3 FLOPs each) over about ``seconds``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return _best_rate(lambda: a @ b, 2 * n**3, device, seconds)


def op_rates(device: torch.device, dtype: torch.dtype, tokens: int = 4096, seconds: float = 0.5) -> dict[str, float]:
    """Best FLOP/s of the four kinds of op a video UNet and its VAE spend their time in, at
    ModelScope's first-level width (320 channels, 5 heads of 64) over ``tokens`` positions: a plain
    matmul (attention written as bmm), a Linear (projections, feed-forward), a 3x3 convolution
    (ResNet blocks, the VAE) and scaled dot-product attention. On a CPU without native bfloat16
    or float16 arithmetic the half-precision rates of the first three fall far below float32's."""
    side = int(tokens**0.5)
    x = torch.randn(tokens, 320, device=device).to(dtype)
    w = torch.randn(320, 320, device=device).to(dtype)
    linear = torch.nn.Linear(320, 320).to(device, dtype)
    conv = torch.nn.Conv2d(320, 320, 3, padding=1).to(device, dtype)
    image = torch.randn(1, 320, side, side, device=device).to(dtype)
    heads = torch.randn(1, 5, tokens, 64, device=device).to(dtype)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with torch.no_grad():
        return {"matmul": _best_rate(lambda: x @ w, 2 * tokens * 320 * 320, device, seconds),
                "linear": _best_rate(lambda: linear(x), 2 * tokens * 320 * 320, device, seconds),
                "conv3x3": _best_rate(lambda: conv(image), 2 * side * side * 320 * 320 * 9, device, seconds),
                "sdpa": _best_rate(lambda: sdpa(heads, heads, heads), 4 * 5 * tokens * tokens * 64, device, seconds)}


def _best_rate(op: Callable[[], object], flops: float, device: torch.device, seconds: float) -> float:
    """Best FLOP/s of ``op`` (``flops`` per call) over about ``seconds``, after one warm-up call."""
    op()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == 0.0:
        synchronize(device)
        t0 = time.perf_counter()
        op()
        synchronize(device)
        best = max(best, flops / (time.perf_counter() - t0))
    return best


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    """``python -m benchmarks.hardware [--device cpu] [--dtypes float32 bfloat16 float16]``: the
    peak each figure is compared with, and the op rates of :func:`op_rates`, per dtype."""
    parser = argparse.ArgumentParser(description="Op rates per dtype on one device (GFLOP/s).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--tokens", type=int, default=4096)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"({device_name(device)}; GFLOP/s)")
    print("| dtype | peak | source | matmul | linear | conv3x3 | sdpa |")
    print("|---|---|---|---|---|---|---|")
    for name in args.dtypes:
        dtype = DTYPES[name]
        reference = peak(device, dtype)
        rates = op_rates(device, dtype, args.tokens)
        print(f"| {name} | {reference.flops / 1e9:.1f} | {reference.source} | "
              + " | ".join(f"{rate / 1e9:.1f}" for rate in rates.values()) + " |")


if __name__ == "__main__":
    main()

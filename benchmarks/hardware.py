"""The physical limit every figure is compared with: a device's peak FLOP/s.

GPUs: dense (no sparsity) datasheet peaks of the tensor cores for bf16/fp16 and tf32, and of the
CUDA cores for plain fp32. PyTorch runs fp32 convolutions on tf32 tensor cores by default
(``torch.backends.cudnn.allow_tf32``), so fp32 runs are compared with the tf32 peak when that is
on. Unknown GPUs and CPUs get a measured peak instead: the best rate of large square matmuls in
the run's dtype and thread count, labelled ``measured``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

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
    best, deadline = 0.0, time.perf_counter() + seconds
    a @ b  # warm-up
    while time.perf_counter() < deadline or best == 0.0:
        synchronize(device)
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

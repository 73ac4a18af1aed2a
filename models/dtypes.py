"""The floating-point dtypes a model may be loaded and run in, by the name the CLI, flow
parameters and ``ModelSources(dtype=...)`` use."""

from __future__ import annotations

import platform

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# the CPU features (probes of torch.cpu) that give x86 native arithmetic in each half precision
_NATIVE_X86 = {"bfloat16": ("_is_avx512_bf16_supported", "_is_amx_tile_supported"),
               "float16": ("_is_amx_fp16_supported",)}


def slow_on_this_cpu(dtype: str) -> bool:
    """Whether this x86 CPU lacks native arithmetic for a half-precision ``dtype`` (AVX-512 BF16 or
    AMX). There PyTorch's half-precision matmuls and convolutions run up to hundreds of times
    slower than float32 (``python -m benchmarks.hardware``; docs/performance.md), so a
    CPU run is faster in float32. False where it cannot tell (other architectures, unknown probes)."""
    if dtype not in _NATIVE_X86 or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    probes = [getattr(torch.cpu, name, None) for name in _NATIVE_X86[dtype]]
    if any(probe is None for probe in probes):
        return False
    return not any(probe() for probe in probes)

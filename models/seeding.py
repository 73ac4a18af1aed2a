"""Per-video, per-stage, per-chunk random streams.

Every random draw of a video comes from a generator seeded by (video seed, stage, index), so a
chunk's noise does not depend on how many draws came before it: a resumed run draws exactly
what an uninterrupted one would, and chunks can run on different workers.
"""

from __future__ import annotations

import hashlib

import torch

MAX_SEED = 2**63 - 1


def derive_seed(seed: int, stage: str, index: int = 0) -> int:
    """A 63-bit seed for one random stream, stable across processes and platforms."""
    digest = hashlib.sha256(f"{seed}/{stage}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & MAX_SEED


def stream(seed: int, stage: str, index: int = 0) -> torch.Generator:
    """A CPU generator for one stream. Noise is drawn on the CPU and moved, so a seed gives the
    same numbers whatever device the model runs on."""
    return torch.Generator("cpu").manual_seed(derive_seed(seed, stage, index))


def randn(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str,
          dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)

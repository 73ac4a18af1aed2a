"""The floating-point dtypes a model may be loaded and run in, by the name the CLI, flow
parameters and ``ModelSources(dtype=...)`` use."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

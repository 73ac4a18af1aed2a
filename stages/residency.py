"""Which models are on the accelerator while a video is made.

Normally every model a process loads stays on its device. With ``low_memory`` (``--low-memory``)
only the model of the stage that is running is: the others wait in CPU memory and move over when
their stage starts (weights move exactly, so the video is unchanged), and the refine stage keeps
the long latent and frame tensors in CPU memory, moving one chunk or one VAE batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.latent_video import LatentVideoModel


@dataclass
class Residency:
    """Where a process's stage models live (every stage holds one; the default keeps its model
    where it is)."""

    device: str
    low_memory: bool = False
    current: LatentVideoModel | None = None

    def use(self, model: LatentVideoModel) -> None:
        """Make ``model`` the one on the device (low memory), moving the previous one off it."""
        if not self.low_memory or model is self.current:
            return
        if self.current is not None:
            self.current.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        model.to(self.device)
        self.current = model

    @property
    def holding(self) -> str:
        """Where a stage keeps a video's long tensors: CPU memory in low-memory mode."""
        return "cpu" if self.low_memory else self.device


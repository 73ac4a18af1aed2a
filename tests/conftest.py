"""Shared fixtures: tiny models built from the preset configs (no download), seeded."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_streaming():
    from models.streaming_t2v import StreamingT2V

    return StreamingT2V.from_preset("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_video_ldm():
    from models.video_ldm import VideoLDM

    return VideoLDM.from_preset("tiny", seed=0)


@pytest.fixture()
def seeded():
    torch.manual_seed(1234)


@pytest.fixture(scope="session")
def tiny_stages():
    from stages.generate import Stages
    from stages.sources import ModelSources

    return Stages.load(ModelSources(preset="tiny"))


FAST = dict(num_inference_steps=2, refine_steps=5)  # 2 DDIM steps per chunk; refine 600 -> 400 -> 200

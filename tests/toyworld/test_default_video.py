"""The embedded default makes a video that shows its prompt: one short video with the shipped
tiny preset and its defaults, refinement on, checked on its pixels (the refined frames keep the
captioned object's colour and stay close to the low-res video, and are sharper than a bicubic
upscale of it)."""

from __future__ import annotations

import pytest

from evaluation.fidelity import fidelity
from infra.video_io import read_video
from models.request import GenerationRequest
from toyworld.tracking import object_motion

PROMPT = "a red circle moving left on a striped background"


@pytest.fixture(scope="module")
def default_video(tmp_path_factory):
    from infra.run_store import RunStore
    from stages.generate import Stages, generate_video
    from stages.sources import ModelSources

    request = GenerationRequest(PROMPT, num_frames=24, num_inference_steps=10)
    store = RunStore(str(tmp_path_factory.mktemp("default")), request.video_id)
    record = generate_video(request, Stages.load(ModelSources()), store)
    return request, read_video(record["artifacts"]["low_res_video"]), read_video(record["artifacts"]["video"])


def test_the_refined_video_keeps_the_object_of_its_prompt(default_video):
    request, low_res, refined = default_video
    assert refined.shape[1:3] == (2 * low_res.shape[1], 2 * low_res.shape[2])  # a real upscale
    low, high = (object_motion(frames, PROMPT, request.fps).presence for frames in (low_res, refined))
    assert low >= 0.75  # the object shows in most low-res frames (it wraps around the frame's edges)
    assert high >= low - 0.05  # and refinement keeps it wherever the low-res video has it


def test_the_refined_video_stays_close_to_its_low_res_video_and_is_sharper(default_video):
    _, low_res, refined = default_video
    f = fidelity(low_res, refined)
    assert f.psnr_to_low_res >= 23.0, f
    assert f.sharpness_refined > f.sharpness_bicubic, f

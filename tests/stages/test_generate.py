"""The whole method in one process: frame counts, sizes, determinism, resume."""

from __future__ import annotations

import pytest
import torch

from infra.run_store import RunStore
from infra.video_io import probe, read_video
from stages.extend import generate_low_res
from stages.generate import generate_video
from models.request import GenerationRequest

FAST = dict(num_inference_steps=1, refine_steps=5)


@pytest.mark.integration  # a whole video end to end: init, extend, refine, MP4s
@pytest.mark.parametrize("n", [48, 57])
def test_video_has_exactly_the_requested_frames_at_the_right_size(tiny_stages, tmp_path, n):
    request = GenerationRequest("A squirrel on a table full of big nuts.", num_frames=n, seed=1, **FAST)
    record = generate_video(request, tiny_stages, RunStore(str(tmp_path), request.video_id))
    final, low = probe(record["artifacts"]["video"]), probe(record["artifacts"]["low_res_video"])
    assert (final["frames"], final["height"], final["width"], final["codec"]) == (n, 128, 128, "h264")
    assert (low["frames"], low["height"], low["width"]) == (n, 64, 64)
    assert final["fps"] == 10.0
    assert record["frames"] == n and record["chunks"]["total"] == 1 + -(-(n - 16) // 8)


def test_same_seed_same_latents_different_seed_different(tiny_stages):
    def chunks(seed):
        saved = {}
        request = GenerationRequest("Men walking in the rain.", num_frames=24, seed=seed, **FAST)
        frames = generate_low_res(request, tiny_stages.init, tiny_stages.extend,
                                  on_chunk=lambda c, out: saved.__setitem__(c.index, out.latents))
        return frames, saved

    (a, la), (b, lb), (_, lc) = chunks(7), chunks(7), chunks(8)
    assert all(la[k].numpy().tobytes() == lb[k].numpy().tobytes() for k in la)
    assert a.numpy().tobytes() == b.numpy().tobytes()
    assert not torch.equal(la[0], lc[0]) and not torch.equal(la[1], lc[1])


def test_a_resumed_video_equals_an_uninterrupted_one(tiny_stages):
    request = GenerationRequest("A gorilla eats a banana in Central Park.", num_frames=40, seed=3, **FAST)
    saved: dict[int, torch.Tensor] = {}
    full = generate_low_res(request, tiny_stages.init, tiny_stages.extend,
                            on_chunk=lambda c, out: saved.__setitem__(c.index, out.latents))
    generated = []
    # "Crash" after chunk 1: only chunks 0 and 1 survive; the rest is generated again.
    resumed = generate_low_res(request, tiny_stages.init, tiny_stages.extend,
                               load_chunk=lambda c: saved[c.index] if c.index <= 1 else None,
                               on_chunk=lambda c, out: generated.append(c.index))
    assert generated == [2, 3]
    assert torch.equal(resumed, full)


def test_shorter_video_is_a_prefix_of_a_longer_one(tiny_stages):
    def low(n):
        return generate_low_res(GenerationRequest("Ants, beetles and centipede nest.", num_frames=n, seed=5, **FAST),
                                tiny_stages.init, tiny_stages.extend)

    assert torch.equal(low(25), low(32)[:, :, :25])


def test_finished_video_is_not_generated_again(tiny_stages, tmp_path):
    request = GenerationRequest("A knight riding on a horse.", num_frames=16, seed=2, refine=False, **FAST)
    store = RunStore(str(tmp_path), request.video_id)
    first = generate_video(request, tiny_stages, store)
    before = read_video(first["artifacts"]["video"])
    again = generate_video(request, tiny_stages, store)
    assert again == first and (read_video(again["artifacts"]["video"]) == before).all()


def test_apm_off_ablation_changes_the_extension_only(tiny_stages):
    import copy

    from models.apm import APMAttnProcessor

    stages = copy.copy(tiny_stages)
    stages.extend = copy.copy(tiny_stages.extend)
    stages.extend.model = copy.copy(tiny_stages.extend.model)
    stages.extend.model.unet = copy.deepcopy(tiny_stages.extend.model.unet)
    for p in stages.extend.model.unet.unet.attn_processors.values():
        if isinstance(p, APMAttnProcessor):
            p.alpha.data.fill_(1.0)  # a "trained" APM, so that the anchor matters
    kwargs = dict(prompt="A beagle reading a paper", num_frames=24, seed=2, **FAST)
    on = generate_low_res(GenerationRequest(**kwargs), stages.init, stages.extend)
    off = generate_low_res(GenerationRequest(**kwargs, apm=False), stages.init, stages.extend)
    assert torch.equal(on[:, :, :16], off[:, :, :16]) and not torch.equal(on[:, :, 16:], off[:, :, 16:])


def test_condition_replacement_changes_the_extension_only_and_resumes_bit_for_bit(tiny_stages):
    """Beyond the paper: extension chunks pinned to the previous chunk's noised latents. The first
    chunk is untouched, the replacement noise has its own stream (a resumed video equals an
    uninterrupted one), and the option enters the video id only when on."""
    kwargs = dict(prompt="A squirrel on a table full of big nuts.", num_frames=32, seed=4, **FAST)
    request = GenerationRequest(**kwargs, condition_replacement=True)
    plain = GenerationRequest(**kwargs, condition_replacement=False)
    assert request.video_id != plain.video_id
    saved: dict[int, torch.Tensor] = {}
    on = generate_low_res(request, tiny_stages.init, tiny_stages.extend,
                          on_chunk=lambda c, out: saved.__setitem__(c.index, out.latents))
    off = generate_low_res(plain, tiny_stages.init, tiny_stages.extend)
    assert torch.equal(on[:, :, :16], off[:, :, :16]) and not torch.equal(on[:, :, 16:], off[:, :, 16:])
    resumed = generate_low_res(request, tiny_stages.init, tiny_stages.extend,
                               load_chunk=lambda c: saved[c.index] if c.index <= 1 else None)
    assert torch.equal(resumed, on)

"""The prompt-following measurement: rendered toy clips of each prompt follow it, and a clip of
another colour does not; the random set has two prompts per colour, the same for a seed."""

from __future__ import annotations

import numpy as np

from studies.prompt_following import FOLLOWS, measure, random_prompts
from toyworld.scenes import COLOURS, render, scene_for_caption


def test_the_random_set_has_two_prompts_per_colour_and_is_seeded():
    prompts = random_prompts(0)
    assert len(prompts) == 16 and prompts == random_prompts(0) and prompts != random_prompts(1)
    assert sorted(p.split()[1] for p in prompts) == sorted(list(COLOURS) * 2)


def test_a_true_clip_follows_its_prompt_and_a_clip_of_another_colour_does_not():
    rng = np.random.default_rng(0)
    for prompt in random_prompts(0):
        clip = render(scene_for_caption(prompt, rng), 16)
        assert measure(clip, prompt).presence >= FOLLOWS, prompt
    red = "a red circle moving left on a striped background"
    blue = render(scene_for_caption("a blue circle moving left on a striped background", rng), 16)
    assert not measure(blue, red).follows and measure(blue, red).presence == 0.0

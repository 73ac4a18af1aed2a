"""The prompt-following measurement: rendered toy clips of each prompt follow it, a clip of
another colour does not, and specks of the colour in a texture are not an object; the random set
has two prompts per colour, the same for a seed."""

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
        following = measure(clip, prompt)
        assert following.presence >= FOLLOWS and following.object_presence == 1.0 and following.follows, prompt
    red = "a red circle moving left on a striped background"
    blue = render(scene_for_caption("a blue circle moving left on a striped background", rng), 16)
    assert not measure(blue, red).follows and measure(blue, red).presence == 0.0


def test_specks_of_the_colour_in_a_texture_are_not_an_object():
    green = "a green circle moving down on a dotted background"
    clip = render(scene_for_caption("a red circle moving down on a dotted background", np.random.default_rng(1)), 16)
    clip[:, 2::6, 2::6] = COLOURS["green"]  # 121 green dots of one pixel, 2x2 in every frame
    clip[:, 3::6, 3::6] = COLOURS["green"]
    following = measure(clip, green)
    assert following.presence == 1.0  # a few pixels of the colour are there...
    assert following.object_presence == 0.0 and not following.follows  # ...but no object of it

"""Named prompt sets of the nightly benchmark.

``paper``: the test-set prompts of App. F that survived in the paper's source (it lists 50; the
paper's metrics, Sec. 5.2, are averaged over that set). ``smoke``: two short prompts, for a quick
run of every code path. ``toyworld``: the toy world's held-out scenes (never drawn in training),
for the shipped ``tiny`` model.
"""

from __future__ import annotations

from toyworld.dataset import HELD_OUT_PROMPTS

PAPER_TEST_PROMPTS: tuple[str, ...] = (
    "A camel resting on the snow field.",
    "Camera following a pack of crows flying in the sky.",
    "A knight riding on a horse through the countryside.",
    "A gorilla eats a banana in Central Park.",
    "Men walking in the rain.",
    "Ants, beetles and centipede nest.",
    "A squirrel on a table full of big nuts.",
    "A graceful heron stood poised near the reflecting pools of the Duomo, adding a touch of tranquility to the "
    "vibrant surroundings.",
    "A woman with a camera in hand joyfully skipped along the perimeter of the Duomo, capturing the essence of the "
    "moment.",
    "Beside the ancient amphitheater of Taormina, a group of friends enjoyed a leisurely picnic, taking in the "
    "breathtaking views.",
)

SMOKE_PROMPTS: tuple[str, ...] = ("A camel resting on the snow field.", "Men walking in the rain.")

PROMPT_SETS: dict[str, tuple[str, ...]] = {"paper": PAPER_TEST_PROMPTS, "smoke": SMOKE_PROMPTS,
                                            "toyworld": HELD_OUT_PROMPTS}

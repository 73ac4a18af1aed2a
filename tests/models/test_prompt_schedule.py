"""Prompt schedules: the forms a user writes, one canonical request, the prompt of each chunk."""

from __future__ import annotations

import pytest

from models.chunk_plan import ChunkPlan
from models.errors import ConfigError
from models.prompt_schedule import PromptSchedule
from models.request import GenerationRequest


def test_text_and_json_forms_give_one_request_and_one_id():
    text = GenerationRequest("a calm sea", prompt_schedule="40: a storm at sea ;72:a rainbow", num_frames=80)
    forms = ["0:a calm sea;40:a storm at sea;72:a rainbow",
             '[[40, "a storm at sea"], [72, "a rainbow"]]',
             '[{"frame": 0, "prompt": "a calm sea"}, {"frame": 40, "prompt": "a storm at sea"}, [72, "a rainbow"]]']
    for form in forms:
        request = GenerationRequest("a calm sea", prompt_schedule=form, num_frames=80)
        assert request == text and request.video_id == text.video_id
    assert GenerationRequest("", prompt_schedule=forms[0], num_frames=80).video_id == text.video_id
    assert text.prompt_schedule == "40:a storm at sea;72:a rainbow"
    assert text.video_id != GenerationRequest("a calm sea", num_frames=80).video_id


@pytest.mark.parametrize("schedule,field,allowed", [
    ("80:x", "prompt_schedule", "frames below num_frames=80"),
    ("0:another sea", "prompt_schedule", "equal to prompt"),
    ("forty:a storm", r"prompt_schedule\[0\]", "FRAME:PROMPT"),
    ("40:a;24:b", "prompt_schedule", "increasing order"),
    ("40:a;40:b", "prompt_schedule", "increasing order"),
    ("40:", r"prompt_schedule\[0\]\.prompt", "non-empty"),
    ('[[40, "a"', "prompt_schedule", "valid JSON"),
    ('[[-8, "a"]]', r"prompt_schedule\[0\]\.frame", ">= 0"),
    ('[{"frame": 8}]', r"prompt_schedule\[0\]", r"\[frame, prompt\]"),
    ('[[8, "a\\nb"]]', r"prompt_schedule\[0\]\.prompt", "control characters"),
])
def test_a_bad_schedule_names_the_field_and_what_it_may_be(schedule, field, allowed):
    with pytest.raises(ConfigError, match=rf"^{field}=.*must be .*{allowed}"):
        GenerationRequest("a calm sea", prompt_schedule=schedule, num_frames=80)


def test_each_chunk_takes_the_prompt_in_force_at_its_first_new_frame():
    schedule = PromptSchedule.of("sea", "36:storm;40:rainbow")
    extend = ChunkPlan.for_extend(64)  # chunks keep 0-15, 16-23, 24-31, 32-39, 40-47, ...
    assert [schedule.for_chunk(c) for c in extend.chunks] == ["sea", "sea", "sea", "sea", "rainbow", "rainbow",
                                                              "rainbow"]
    refine = ChunkPlan.for_refine(64)  # chunks keep 0-23, 24-39, 40-55, 56-63
    assert [schedule.for_chunk(c) for c in refine.chunks] == ["sea", "sea", "rainbow", "rainbow"]
    assert schedule.prompt_at(36) == "storm" and schedule.prompts() == ("sea", "storm", "rainbow")


def test_prompt_length_is_checked_for_every_scheduled_prompt():
    from models.tokenizer import tiny_clip_tokenizer

    request = GenerationRequest("a calm sea", prompt_schedule="40:" + "x" * 80, num_frames=80)
    with pytest.raises(ConfigError, match=r"prompt_schedule\[40\]="):
        request.check_prompt_length(tiny_clip_tokenizer())

"""Request validation at the boundary."""

from __future__ import annotations

import pytest

from models.errors import ConfigError
from models.tokenizer import tiny_clip_tokenizer
from models.request import (FIRST_ID_PARAMETERS, PAPER_SETTINGS, PARAM_DEFAULTS, PRESET_DEFAULTS, GenerationRequest,
                            with_preset_defaults)


@pytest.mark.parametrize("kwargs,match", [
    ({"prompt": "  "}, r"prompt='  ': must be a non-empty string"),
    ({"num_frames": 15}, r"num_frames=15: must be an integer in \[16, 4800\]"),
    ({"num_frames": 100000}, r"num_frames=100000: .*pass --force"),
    ({"fps": 0}, r"fps=0: must be an integer in \[1, 120\]"),
    ({"seed": -1}, r"seed=-1: must be an integer in \[0, "),
    ({"guidance_text": -2.0}, r"guidance_text=-2.0: must be a finite number >= 0"),
    ({"blend": "soft"}, r"blend='soft'"),
    ({"anchor_frame": 16}, r"anchor_frame=16: must be an integer in \[0, 15\]"),
    ({"condition_replacement": 1}, r"condition_replacement=1: must be True or False"),
    ({"prompt": "a cat \ud800"}, r"prompt='a cat \\ud800': must be a non-empty string of UTF-8 text without control"),
    ({"prompt": "a cat\x00"}, r"prompt='a cat\\x00': must be a non-empty string of UTF-8 text"),
    ({"negative_prompt": "blur\x1b[2J"}, r"negative_prompt=.*: must be a string of UTF-8 text"),
    ({"negative_prompt": "two\nlines"}, r"negative_prompt="),
])
def test_bad_requests_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        GenerationRequest(**{"prompt": "a camel", **kwargs})


def test_force_allows_long_videos_and_ids_are_stable():
    a = GenerationRequest("a camel", num_frames=100000, force=True)
    assert a.video_id == GenerationRequest("a camel", num_frames=100000, force=True).video_id
    assert a.video_id != GenerationRequest("a camel", num_frames=100000, force=True, seed=1).video_id


def test_overlong_prompts_are_refused_unless_truncation_is_asked_for():
    tokenizer = tiny_clip_tokenizer()
    request = GenerationRequest("x" * 200)
    with pytest.raises(ConfigError, match=r"prompt='202 tokens': must be at most 77 CLIP tokens"):
        request.check_prompt_length(tokenizer)
    request.check_prompt_length(tokenizer, truncate=True)
    GenerationRequest("x" * 75).check_prompt_length(tokenizer)


def test_a_parameter_added_later_leaves_earlier_ids_alone():
    """condition_replacement, prompt_schedule and the init video/image came after ids were handed
    out: at their defaults (the values before they existed), they are not part of the id, so a
    manifest written before them still resumes under the same ids."""
    import hashlib
    import json

    request = GenerationRequest("a camel", seed=3, **PAPER_SETTINGS)
    params = request.params()
    for later in ("condition_replacement", "prompt_schedule", "init_video", "init_image", "init_frames"):
        del params[later]
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert request.video_id == digest
    assert GenerationRequest("a camel", seed=3, **{**PAPER_SETTINGS, "condition_replacement": True}).video_id != digest
    assert GenerationRequest("a camel", seed=3, prompt_schedule="40:a dog", **PAPER_SETTINGS).video_id != digest
    assert set(FIRST_ID_PARAMETERS) < {"prompt", *PARAM_DEFAULTS}  # a new field is id-optional without an edit


def test_param_defaults_are_the_request_defaults_with_the_papers_settings():
    params = GenerationRequest("a red circle", **PAPER_SETTINGS).params()
    assert PARAM_DEFAULTS == {k: v for k, v in params.items() if k != "prompt"}
    assert "force" not in PARAM_DEFAULTS


@pytest.mark.parametrize("preset", sorted(PRESET_DEFAULTS))
def test_each_preset_sets_what_a_request_leaves_unset(preset):
    """A parameter left unset (None) takes the preset's value; one given explicitly is kept; the
    modelscope preset runs the paper's settings (50 DDIM steps, refine guidance 7.5)."""
    request = GenerationRequest("a camel", preset=preset)
    assert {k: getattr(request, k) for k in PAPER_SETTINGS} == PRESET_DEFAULTS[preset]
    assert GenerationRequest("a camel", preset=preset, num_inference_steps=3, condition_replacement=False) \
        .params() == {**request.params(), "num_inference_steps": 3, "condition_replacement": False}
    assert with_preset_defaults({"preset": preset, "num_inference_steps": None}) == \
        {"preset": preset, **PRESET_DEFAULTS[preset]}
    assert PRESET_DEFAULTS["modelscope"]["num_inference_steps"] == 50


def test_a_request_equal_to_the_defaults_has_the_id_of_its_values():
    """The id is of the values run, so leaving a parameter to the preset and giving the preset's
    value name the same video."""
    assert GenerationRequest("a camel").video_id == GenerationRequest("a camel", **PRESET_DEFAULTS["tiny"]).video_id

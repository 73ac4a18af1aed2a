"""The CLI arguments, flow parameters and HTTP body derived from one parameter dataclass (infra.params)."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import dataclass
from typing import Literal

import pydantic
import pytest

from infra.params import add_arguments, body_model, flow_parameters, from_arguments, takes_parameters
from models.params import check, param


@dataclass(frozen=True)
class Job:
    prompt: str = param(help="what to make", non_empty=True)
    frames: int = param(16, help="how many frames", ge=16, le=64)
    steps: int = param(50, help="denoising steps", ge=1, flag="--steps-total")
    refine: bool = param(True, help="refine the result")
    extra: bool = param(False, help="an extra", beyond_paper=True)
    mode: Literal["a", "b"] = param("a", help="a mode")
    weight: float = param(7.5, help="a weight", ge=0)

    def __post_init__(self) -> None:
        check(self)


def test_cli_arguments_follow_the_fields():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Job, positional=("prompt",))
    args = parser.parse_args(["a cat", "--frames", "32", "--steps-total", "3", "--no-refine", "--extra"])
    assert Job(**from_arguments(args, Job)) == Job("a cat", frames=32, steps=3, refine=False, extra=True)
    assert Job(**from_arguments(parser.parse_args(["a cat"]), Job)) == Job("a cat")
    text = parser.format_help()
    assert "an integer in [16, 64]" in text and "[beyond the paper]" in text and "--no-refine" in text


def test_flow_parameters_carry_defaults_and_ranges():
    @takes_parameters(Job, into="job", exclude=("prompt",), defaults={"frames": 32})
    def run(prompts: list[str], out: str = "x", job: dict | None = None) -> dict:
        return {"prompts": prompts, "out": out, **job}

    signature = inspect.signature(run)
    assert list(signature.parameters) == ["prompts", "out", "frames", "steps", "refine", "extra", "mode", "weight"]
    assert signature.parameters["frames"].default == 32
    assert run(["p"], steps=3) == {"prompts": ["p"], "out": "x", "frames": 32, "steps": 3, "refine": True,
                                   "extra": False, "mode": "a", "weight": 7.5}
    model = pydantic.create_model("P", **{p.name: (p.annotation, p.default) for p in flow_parameters(Job, ("prompt",))})
    with pytest.raises(pydantic.ValidationError, match="frames"):
        model(frames=8)
    with pytest.raises(pydantic.ValidationError, match="weight"):
        model(weight=float("inf"))


def test_http_body_is_strict_and_documents_ranges():
    Body = body_model(Job, "Body")
    schema = Body.model_json_schema()
    assert schema["required"] == ["prompt"]
    assert schema["properties"]["frames"]["minimum"] == 16 and schema["properties"]["frames"]["maximum"] == 64
    assert Body(prompt="x").model_dump() == {**{k: v for k, v in Job("x").__dict__.items()}}
    for bad in ({"prompt": "x", "colour": "red"}, {"prompt": "x", "refine": "yes"}, {"prompt": 5}):
        with pytest.raises(pydantic.ValidationError):
            Body(**bad)

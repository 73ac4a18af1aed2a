"""Parameters declared once (models.params): ranges checked with the field named, nested groups flattened."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from models.errors import ConfigError
from models.params import build, check, flatten, group, leaf_map, param


@dataclass(frozen=True)
class Inner:
    rate: float = param(0.1, help="a rate", ge=0, le=1)


@dataclass(frozen=True)
class Outer:
    name: str = param(help="a name", non_empty=True)
    steps: int = param(10, help="steps", ge=1, le=100)
    mode: Literal["a", "b"] = param("a", help="a mode")
    limit: float | None = param(None, help="an optional limit", gt=0)
    inner: Inner = group(Inner, prefix="inner_")

    def __post_init__(self) -> None:
        check(self)


@pytest.mark.parametrize("kwargs,match", [
    ({"name": " "}, r"name=' ': must be a non-empty string"),
    ({"name": "x", "steps": 0}, r"steps=0: must be an integer in \[1, 100\]"),
    ({"name": "x", "steps": True}, r"steps=True: must be an integer"),
    ({"name": "x", "mode": "c"}, r"mode='c': must be one of \['a', 'b'\]"),
    ({"name": "x", "limit": 0.0}, r"limit=0.0: must be a finite number > 0, or None"),
    ({"name": "x", "limit": float("nan")}, r"limit=nan"),
])
def test_out_of_range_values_name_the_field_and_the_range(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Outer(**kwargs)


def test_nested_groups_are_flattened_under_their_prefix_and_rebuilt():
    assert list(leaf_map(Outer)) == ["name", "steps", "mode", "limit", "inner_rate"]
    with pytest.raises(ConfigError, match=r"inner_rate=2.0: must be a finite number in \[0, 1\]"):
        check(build(Outer, {"name": "x", "inner_rate": 2.0}))
    value = build(Outer, {"name": "x", "inner_rate": 0.5, "limit": 2.0})
    assert value == Outer("x", limit=2.0, inner=Inner(0.5))
    assert build(Outer, flatten(value)) == value
    with pytest.raises(ConfigError, match=r"colour='red': must be a parameter of Outer"):
        build(Outer, {"name": "x", "colour": "red"})


def test_a_group_may_be_given_whole_or_marked_beyond_the_paper():
    from dataclasses import asdict, dataclass

    value = Outer("x", inner=Inner(0.5))
    assert build(Outer, asdict(value)) == build(Outer, {"name": "x", "inner": Inner(0.5)}) == value
    with pytest.raises(ConfigError, match=r"inner_rate=0.2: must be given once"):
        build(Outer, {"name": "x", "inner": {"rate": 0.5}, "inner_rate": 0.2})

    @dataclass(frozen=True)
    class Extended:
        steps: int = param(10, help="steps")
        extra: Inner = group(Inner, help="beyond", beyond_paper=True)

    assert {leaf.name: leaf.spec.beyond_paper for leaf in leaf_map(Extended).values()} == {"steps": False,
                                                                                           "rate": True}

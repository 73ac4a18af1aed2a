"""The boundaries derived from a parameter dataclass (:mod:`models.params`): CLI arguments, Prefect
flow parameters and a pydantic body, so that a parameter added to ``GenerationRequest`` or
``TrainConfig`` appears in every one of them with the same name, type, default, range and help.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import pydantic
from pydantic import Field

from models.params import Leaf, leaves


def _selected(cls: type, exclude: Iterable[str]) -> list[Leaf]:
    skip = set(exclude)
    return [leaf for leaf in leaves(cls) if leaf.name not in skip]


def _help(leaf: Leaf) -> str:
    text = leaf.spec.help
    if leaf.spec.beyond_paper:
        text += " [beyond the paper]"
    default = leaf.default
    if leaf.base_type is not bool and default not in (None, "") and not leaf.required:
        text += f" (default {default})"
    if leaf.base_type is bool:
        return f"turn off: {text}" if leaf.default is True else text + (f"; unset: {leaf.spec.unset}"
                                                                          if leaf.spec.unset else "")
    return f"{text}; {leaf.allowed()}"


def flag(leaf: Leaf) -> str:
    """The command-line flag of a parameter (a ``True`` default gives ``--no-<name>``)."""
    if leaf.spec.flag:
        return leaf.spec.flag
    name = leaf.name.replace("_", "-")
    return f"--no-{name}" if leaf.base_type is bool and leaf.default is True else f"--{name}"


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                  exclude: Iterable[str] = (), positional: Iterable[str] = ()) -> None:
    """Add one argument per parameter of ``cls`` (its ``dest`` is the parameter's name).
    Values are not range-checked here: the dataclass does it, with the same message everywhere."""
    positional = set(positional)
    groups: dict[str, Any] = {}
    for leaf in _selected(cls, exclude):
        help_ = _help(leaf).replace("%", "%%")  # argparse %-formats help texts
        target = parser
        if leaf.group:
            if leaf.group not in groups:
                groups[leaf.group] = parser.add_argument_group(leaf.group)
            target = groups[leaf.group]
        if leaf.name in positional:
            target.add_argument(leaf.name, help=help_)
        elif leaf.base_type is bool and leaf.default is None:  # unset, on or off: --name / --no-name
            target.add_argument(flag(leaf), dest=leaf.name, help=help_, default=None,
                                action=argparse.BooleanOptionalAction)
        elif leaf.base_type is bool:
            target.add_argument(flag(leaf), dest=leaf.name, help=help_,
                                action="store_false" if leaf.default is True else "store_true")
        else:
            kind = leaf.base_type if leaf.base_type in (int, float) else str
            target.add_argument(flag(leaf), dest=leaf.name, type=kind, required=leaf.required,
                                default=None if leaf.required else leaf.default, help=help_)


def from_arguments(args: argparse.Namespace, cls: type, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The parsed values of the parameters :func:`add_arguments` added for ``cls``."""
    return {leaf.name: getattr(args, leaf.name) for leaf in _selected(cls, exclude)}


_SCHEMA_KEYS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum"}


def _annotation(leaf: Leaf, constrained: bool = True) -> Any:
    """The parameter's type for pydantic: its range as ``Field`` constraints, its help as the
    description shown by the Prefect UI and the OpenAPI schema."""
    spec = leaf.spec
    kind = leaf.base_type
    bounds: dict[str, Any] = {}
    if kind in (int, float):
        limits = {"ge": spec.ge, "le": spec.le, "gt": spec.gt}
        if constrained:
            bounds = {k: v for k, v in limits.items() if v is not None}
        else:  # documented in the schema only; the dataclass checks it with its own message
            bounds = {"json_schema_extra": {_SCHEMA_KEYS[k]: v for k, v in limits.items() if v is not None}}
        if kind is float and constrained:
            bounds["allow_inf_nan"] = False
    if leaf.choices is not None and typing.get_origin(kind) is not typing.Literal:
        kind = typing.Literal[leaf.choices]
    description = spec.help + (" [beyond the paper]" if spec.beyond_paper else "")
    annotated = Annotated[kind, Field(description=description, **bounds)]
    return annotated | None if leaf.optional else annotated


def flow_parameters(cls: type, exclude: Iterable[str] = (),
                    defaults: dict[str, Any] | None = None) -> list[inspect.Parameter]:
    """Keyword-only ``inspect.Parameter`` objects for the parameters of ``cls``, with their ranges
    as pydantic constraints (Prefect validates ``-p name=value`` against them before a run)."""
    defaults = defaults or {}
    return [inspect.Parameter(leaf.name, inspect.Parameter.KEYWORD_ONLY, annotation=_annotation(leaf),
                              default=defaults.get(leaf.name, inspect.Parameter.empty if leaf.required
                                                   else leaf.default))
            for leaf in _selected(cls, exclude)]


def takes_parameters(cls: type, into: str, exclude: Iterable[str] = (),
                     defaults: dict[str, Any] | None = None) -> Callable[[Callable], Callable]:
    """Give the decorated function every parameter of ``cls`` (except ``exclude``) as keyword
    parameters after its own, in its signature (which Prefect turns into the flow's parameter
    schema), and pass their values to it as one dict, the keyword argument ``into``.

    Put it under ``@flow``: the flow's parameters are then the function's own and the dataclass's."""
    extra = flow_parameters(cls, exclude, defaults)
    names = [p.name for p in extra]

    def decorate(fn: Callable) -> Callable:
        own = [p for name, p in inspect.signature(fn, eval_str=True).parameters.items() if name != into]
        clash = {p.name for p in own} & set(names)
        if clash:
            raise TypeError(f"{fn.__name__} declares {sorted(clash)}, which {cls.__name__} already defines")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name, p.default) for name, p in zip(names, extra)}
            return fn(*args, **kwargs, **{into: values})

        wrapper.__signature__ = inspect.Signature(own + extra, return_annotation=inspect.signature(
            fn, eval_str=True).return_annotation)
        del wrapper.__wrapped__  # Prefect and pydantic read the signature above, not fn's
        return wrapper

    return decorate


def body_model(cls: type, name: str, exclude: Iterable[str] = (), doc: str = "") -> type[pydantic.BaseModel]:
    """A strict pydantic model of ``cls``'s parameters for an HTTP body: unknown fields and wrong
    types are refused by pydantic; ranges are documented in the schema and checked by ``cls``
    itself, so an out-of-range value gets the same message as on the CLI."""
    fields = {leaf.name: (_annotation(leaf, constrained=False), ... if leaf.required else leaf.default)
              for leaf in _selected(cls, exclude)}
    model = pydantic.create_model(name, __config__=pydantic.ConfigDict(extra="forbid", strict=True),
                                  __doc__=doc or None, **fields)
    return model

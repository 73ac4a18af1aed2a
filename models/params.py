"""One definition of each user-facing parameter: a dataclass field whose metadata holds a :class:`Spec`.

A configuration dataclass (``GenerationRequest``, ``TrainConfig``) declares each parameter once,
with :func:`param`: its default, its help text, its range and, where it differs from
``--name-with-dashes``, its command-line flag. :func:`check` validates an instance against those
ranges, raising :class:`~models.errors.ConfigError` with the field and the allowed range, and
every boundary is derived from the same fields by :mod:`infra.params`: the CLI's arguments,
Prefect flow parameters and the Serve body. A nested dataclass field declared with :func:`group`
is flattened into its parameters, optionally under a prefix (``dropout_text``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, dataclass
from typing import Any

from models.errors import ConfigError

SPEC_KEY = "param"
GROUP_KEY = "param_group"


@dataclass(frozen=True)
class Spec:
    """How a parameter is shown and checked at every boundary."""

    help: str
    ge: float | None = None  # inclusive lower bound
    le: float | None = None  # inclusive upper bound
    gt: float | None = None  # exclusive lower bound
    choices: tuple[Any, ...] | None = None  # allowed values (a Literal type gives them too)
    flag: str | None = None  # the CLI flag, when not --<name-with-dashes>
    non_empty: bool = False  # strings: at least one non-blank character
    note: str = ""  # appended to the allowed range in errors and help, e.g. "(a frame of the first chunk)"
    beyond_paper: bool = False  # an option the paper does not have (off or neutral by default)
    unset: str = ""  # for a None default: what leaving it unset gives, e.g. "the preset's: tiny 20, modelscope 50"


def param(default: Any = MISSING, *, help: str, default_factory: Any = MISSING, compare: bool = True,
          **spec: Any) -> Any:
    """A dataclass field that is a user-facing parameter (see :class:`Spec` for ``spec``)."""
    return dataclasses.field(default=default, default_factory=default_factory, compare=compare,
                             metadata={SPEC_KEY: Spec(help=help, **spec)})


def group(default_factory: Any, *, prefix: str = "", help: str = "", beyond_paper: bool = False) -> Any:
    """A nested dataclass of parameters, flattened at the boundaries as ``prefix + name``;
    ``beyond_paper`` marks every parameter in it as one the paper does not have."""
    return dataclasses.field(default_factory=default_factory, metadata={GROUP_KEY: (prefix, help, beyond_paper)})


@dataclass(frozen=True)
class Leaf:
    """One flattened parameter: its boundary name, where it sits in the nested dataclass, its type."""

    name: str
    path: tuple[str, ...]
    field: dataclasses.Field
    hint: Any
    spec: Spec
    group: str = ""  # the help of the group it belongs to ('' at the top level)

    @property
    def default(self) -> Any:
        if self.field.default is not MISSING:
            return self.field.default
        if self.field.default_factory is not MISSING:
            return self.field.default_factory()
        return MISSING

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def base_type(self) -> Any:
        """The hint without ``None`` (``float | None`` -> ``float``)."""
        return unwrap_optional(self.hint)[0]

    @property
    def optional(self) -> bool:
        return unwrap_optional(self.hint)[1]

    @property
    def choices(self) -> tuple[Any, ...] | None:
        if self.spec.choices is not None:
            return self.spec.choices
        if typing.get_origin(self.base_type) is typing.Literal:
            return typing.get_args(self.base_type)
        return None

    def allowed(self) -> str:
        return allowed(self)


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(``X``, True) for ``X | None``, (``hint``, False) otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def leaves(cls: type, _path: tuple[str, ...] = (), _prefix: str = "", _group: str = "",
           _beyond: bool = False) -> Iterator[Leaf]:
    """Every parameter of ``cls`` in declaration order, nested groups flattened."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if GROUP_KEY in f.metadata:
            prefix, help_, beyond = f.metadata[GROUP_KEY]
            yield from leaves(hints[f.name], (*_path, f.name), _prefix + prefix, help_ or _group, _beyond or beyond)
        elif SPEC_KEY in f.metadata:
            spec = f.metadata[SPEC_KEY]
            if _beyond and not spec.beyond_paper:
                spec = dataclasses.replace(spec, beyond_paper=True)
            yield Leaf(_prefix + f.name, (*_path, f.name), f, hints[f.name], spec, _group)


def leaf_map(cls: type) -> dict[str, Leaf]:
    return {leaf.name: leaf for leaf in leaves(cls)}


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def allowed(leaf: Leaf) -> str:
    """The allowed values of a parameter in words, as :class:`ConfigError` shows them."""
    spec, kind = leaf.spec, leaf.base_type
    if leaf.choices is not None:
        text = f"one of {list(leaf.choices)}"
    elif kind is bool:
        text = "True or False"
    elif kind in (int, float):
        noun = "an integer" if kind is int else "a finite number"
        if spec.ge is not None and spec.le is not None:
            text = f"{noun} in [{_number(spec.ge)}, {_number(spec.le)}]"
        elif spec.gt is not None and spec.le is not None:
            text = f"{noun} in ({_number(spec.gt)}, {_number(spec.le)}]"
        elif spec.ge is not None:
            text = f"{noun} >= {_number(spec.ge)}"
        elif spec.gt is not None:
            text = f"{noun} > {_number(spec.gt)}"
        elif spec.le is not None:
            text = f"{noun} <= {_number(spec.le)}"
        else:
            text = noun
    elif kind is str:
        text = ("a non-empty string" if spec.non_empty else "a string") + " of UTF-8 text without control characters"
    else:
        text = f"a {getattr(kind, '__name__', kind)}"
    if spec.note:
        text += f" {spec.note}"
    if leaf.optional:
        text += f"; unset: {spec.unset}" if spec.unset else ", or None"
    return text


def is_clean_text(value: str) -> bool:
    """Text every store and protocol can carry: encodable as UTF-8 (no lone surrogates) and free of
    control characters (NUL, newlines, escapes: Unicode category Cc)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(unicodedata.category(c) == "Cc" for c in value)


def _fits(leaf: Leaf, value: Any) -> bool:
    spec, kind = leaf.spec, leaf.base_type
    if value is None:
        return leaf.optional
    if leaf.choices is not None:
        return any(value == c and type(value) is type(c) for c in leaf.choices)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            return False
    elif kind is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return False
    elif kind is str:
        return isinstance(value, str) and is_clean_text(value) and (not spec.non_empty or value.strip() != "")
    else:
        return True
    return ((spec.ge is None or value >= spec.ge) and (spec.le is None or value <= spec.le)
            and (spec.gt is None or value > spec.gt))


def value_at(obj: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        obj = getattr(obj, name)
    return obj


def check(obj: Any, skip: Iterable[str] = ()) -> None:
    """Raise :class:`ConfigError` for the first parameter of ``obj`` outside its declared range."""
    skipped = set(skip)
    for leaf in leaves(type(obj)):
        if leaf.name in skipped:
            continue
        value = value_at(obj, leaf.path)
        if not _fits(leaf, value):
            raise ConfigError(leaf.name, value, leaf.allowed())


def build(cls: type, values: dict[str, Any]) -> Any:
    """An instance of ``cls`` from flat parameter values (``dropout_text=...``); nested groups are
    built from their own parameters, missing ones take their defaults. A group may also be given
    whole under its field's name, as a mapping of its fields (``dropout={"text": ...}``, what
    ``dataclasses.asdict`` writes) or as an instance."""
    known = leaf_map(cls)
    by_path: dict[tuple[str, ...], Any] = {}
    for name, value in _expanded(cls, values):
        if name not in known:
            raise ConfigError(name, value, f"a parameter of {cls.__name__} (one of {sorted(known)})")
        if known[name].path in by_path:
            raise ConfigError(name, value, "given once (flat or within its group, not both)")
        by_path[known[name].path] = value
    return _build(cls, by_path)


def _expanded(cls: type, values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(flat name, value) of ``values``, whose groups may be given whole under their field's name."""
    groups = {f.name: f for f in dataclasses.fields(cls) if GROUP_KEY in f.metadata}
    hints = typing.get_type_hints(cls) if groups else {}
    for name, value in values.items():
        if name in groups and (isinstance(value, dict) or dataclasses.is_dataclass(value)):
            inner = value if isinstance(value, dict) else {f.name: getattr(value, f.name)
                                                           for f in dataclasses.fields(value)}
            yield from _expanded(hints[name], inner, prefix + groups[name].metadata[GROUP_KEY][0])
        else:
            yield prefix + name, value


def _build(cls: type, by_path: dict[tuple[str, ...], Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if GROUP_KEY in f.metadata:
            inner = {path[1:]: v for path, v in by_path.items() if path[0] == f.name}
            kwargs[f.name] = _build(hints[f.name], inner)
        elif (f.name,) in by_path:
            kwargs[f.name] = by_path[(f.name,)]
    return cls(**kwargs)


def flatten(obj: Any) -> dict[str, Any]:
    """The flat parameter values of ``obj`` (the inverse of :func:`build`)."""
    return {leaf.name: value_at(obj, leaf.path) for leaf in leaves(type(obj))}

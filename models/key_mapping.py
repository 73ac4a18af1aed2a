"""Strict checkpoint key mapping, shared by the converters of released checkpoints.

A converter sorts every key of a foreign state dict into one of three sets: mapped onto one of
our keys, dropped for a stated reason (a part we take from elsewhere, or a part the model never
uses), or unrecognised. Any unrecognised key, and any tensor whose shape differs from its target
other than by a known layout change, stops the conversion with the keys named: a checkpoint
with another layout must never lose weights, or have them reinterpreted, without a word.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from models.errors import ConfigError

SHOWN_KEYS = 10


@dataclass
class KeyReport:
    """Where each key of a foreign state dict goes."""

    mapped: dict[str, str] = field(default_factory=dict)  # theirs -> ours
    dropped: dict[str, str] = field(default_factory=dict)  # theirs -> why
    unrecognised: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A listing for a user: every dropped key with its reason, then every unrecognised key."""
        out = [f"dropped\t{key}\t{why}" for key, why in sorted(self.dropped.items())]
        out += [f"unrecognised\t{key}" for key in sorted(self.unrecognised)]
        out.append(f"# {len(self.mapped)} mapped, {len(self.dropped)} dropped, {len(self.unrecognised)} unrecognised")
        return out

    def require_complete(self, checkpoint: str, layout: str) -> None:
        if self.unrecognised:
            keys = sorted(self.unrecognised)
            shown = ", ".join(keys[:SHOWN_KEYS]) + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")
            raise ConfigError("checkpoint", checkpoint,
                              f"a checkpoint of {layout} whose every key is known; {len(keys)} unrecognised: {shown} "
                              "(--list-dropped lists every key that would not be converted)")


def known_layout_change(source: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """A Linear weight (out, in) and a 1x1 convolution's (out, in, 1[, 1]) hold the same matrix:
    the only reshape a converter may make. Anything else of equal size is a different tensor."""
    def core(shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(shape)
        while len(shape) > 2 and shape[-1] == 1:
            shape = shape[:-1]
        return shape

    return len(core(source)) == 2 and core(source) == core(target)


def fit_shapes(state: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """``state`` with each tensor reshaped to its target's shape where that is a known layout
    change; a ConfigError naming the keys for any other mismatch."""
    out, bad = {}, []
    for key, value in state.items():
        want = target[key].shape if key in target else value.shape
        if value.shape == want:
            out[key] = value
        elif known_layout_change(tuple(value.shape), tuple(want)):
            out[key] = value.reshape(want)
        else:
            bad.append(f"{key} {tuple(value.shape)} -> {tuple(want)}")
    if bad:
        raise ConfigError(f"checkpoint ({what})", bad[0], f"tensors of the target's shapes or a linear <-> 1x1 "
                          f"convolution layout; {len(bad)} differ: {'; '.join(bad[:SHOWN_KEYS])}")
    return out


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    """Load converted weights into ``module`` (built on meta: by assignment): every key matched
    both ways and every shape equal up to the known layout change (:func:`fit_shapes`), else a
    ConfigError naming the keys; the module in eval mode."""
    target = module.state_dict()
    missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    if missing or unexpected:
        shown = "; ".join(f"{kind} ({len(keys)}): {', '.join(keys[:SHOWN_KEYS])}"
                          for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys)
        raise ConfigError(f"checkpoint ({what})", (missing + unexpected)[0], f"the keys of the {what}; {shown}")
    fitted = fit_shapes(state, target, what)
    meta = any(t.is_meta for t in target.values())
    module.load_state_dict({k: v if meta else v.to(target[k].dtype) for k, v in fitted.items()},
                           strict=True, assign=meta)
    return module.eval()

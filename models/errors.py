"""Configuration errors that name the offending field and what it may be."""

from __future__ import annotations

from typing import Any


SHOWN_CHARS = 120


class ConfigError(ValueError):
    """A configuration value is out of range.

    The message always has the form ``<field>=<value!r>: must be <allowed>`` so that a CLI,
    a flow parameter check or an HTTP handler can show it to a user as is; a long value's repr is
    cut to :data:`SHOWN_CHARS` (an error never echoes a whole file or body).
    """

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        shown = repr(value)
        if len(shown) > SHOWN_CHARS:
            shown = shown[:SHOWN_CHARS] + "..."
        super().__init__(f"{field}={shown}: must be {allowed}")

    def __reduce__(self):  # picklable across processes (Ray workers, Prefect tasks)
        return type(self), (self.field, self.value, self.allowed)


def require(condition: bool, field: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, value, allowed)

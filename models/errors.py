"""Configuration errors that name the offending field and what it may be."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value is out of range.

    The message always has the form ``<field>=<value!r>: must be <allowed>`` so that a CLI,
    a flow parameter check or an HTTP handler can show it to a user as is.
    """

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r}: must be {allowed}")

    def __reduce__(self):  # picklable across processes (Ray workers, Prefect tasks)
        return type(self), (self.field, self.value, self.allowed)


def require(condition: bool, field: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, value, allowed)

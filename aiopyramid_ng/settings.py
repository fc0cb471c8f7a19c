"""Reading aiopyramid_ng's settings: one place that checks them and words the errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pyramid.exceptions import ConfigurationError

__all__ = ["positive_setting"]

N = TypeVar("N", int, float)


def positive_setting(
    settings: Mapping[str, Any] | None,
    name: str,
    default: N,
    convert: Callable[[Any], N],
    fix: str,
) -> N:
    """Return the setting ``name`` converted by ``convert``, or ``default`` when absent.

    :raises ConfigurationError: when the value is not a positive number; the
        message names the setting, the value and ``fix``.
    """
    raw = (settings or {}).get(name, default)
    try:
        value = convert(raw)
    except (TypeError, ValueError):
        value = convert(0)
    if value <= 0:
        kind = "whole number" if convert is int else "number"
        raise ConfigurationError(f"The setting {name} = {raw!r} is not a positive {kind}; {fix}")
    return value

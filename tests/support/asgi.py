"""ASGI messages as the tests write them by hand, playing the server.

A server may send anything, malformed messages included, so the tests that
play one type their messages as plain mappings; the application accepts
them (:data:`aiopyramid_ng.types.AnyReceive`) as it accepts httpx's.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, TypeAlias

__all__ = ["Message"]

Message: TypeAlias = MutableMapping[str, Any]

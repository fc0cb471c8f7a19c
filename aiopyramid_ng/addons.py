"""Integration with Pyramid add-ons that assume one request per thread.

Included by ``config.include('aiopyramid_ng')``.  Each integration is set up
only when its package is installed.
"""

from __future__ import annotations

from importlib.util import find_spec

from pyramid.config import Configurator

__all__ = ["includeme"]


def includeme(config: Configurator) -> None:
    """Include the integrations for the add-ons that are installed."""
    if find_spec("transaction") is not None:
        config.include(".transaction")

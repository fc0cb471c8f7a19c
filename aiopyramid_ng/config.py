"""aiopyramid's import path for the view mappers, kept so that migrating is a rename.

The mappers live in :mod:`aiopyramid_ng.mappers`.
"""

from __future__ import annotations

from .mappers import (
    BridgeMapper,
    CoroutineMapper,
    CoroutineOrExecutorMapper,
    ExecutorMapper,
    GreenletMapper,
)

__all__ = [
    "BridgeMapper",
    "CoroutineMapper",
    "CoroutineOrExecutorMapper",
    "ExecutorMapper",
    "GreenletMapper",
]

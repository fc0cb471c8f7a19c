"""What the protocol handlers of this package need of the application they serve.

The HTTP and WebSocket handlers get a :class:`ServedApp`, not the
:class:`~aiopyramid_ng.asgi.ASGIApplication` itself: they see the WSGI
callable, the registry, the lifecycle and the body limit, and nothing else.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from pyramid.registry import Registry

from ..executor import executor_of
from .lifespan import Lifecycle

__all__ = ["ServedApp"]


@dataclass(frozen=True, slots=True)
class ServedApp:
    """One application as its HTTP and WebSocket handlers see it."""

    #: Calls the WSGI application (see ``bridge.direct_call``).
    call_app: Any
    #: The application's registry, or None for a pipeline without one.
    registry: Registry | None
    #: Starts the application on first use where the server sends no lifespan.
    lifecycle: Lifecycle
    #: Largest request body, in bytes.
    max_body_size: int

    def executor(self) -> Executor:
        """The application's thread pool (looked up only when a file body is served)."""
        return executor_of(self.registry)

"""Zope interfaces for the pluggable parts of aiopyramid_ng."""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IAppExecutor"]


class IAppExecutor(Interface):  # type: ignore[misc]
    """Runs an application's blocking work: plain views and ``use_executor`` functions.

    Registered as a utility by ``config.include('aiopyramid_ng')``; replace it
    with ``config.set_executor()``.
    """

    owned = Attribute("True when the application created the pool and shuts it down.")

    # Zope interfaces declare methods without ``self``.
    def get() -> object:  # type: ignore[misc]
        """Return the :class:`concurrent.futures.Executor`, creating it on first use."""

    def shutdown(wait: bool = True) -> None:
        """Shut the pool down if the application owns it; later ``get()`` makes a new one."""

"""Run an application's own, unchanged test suite with aiopyramid_ng: ``pytest --aiopyramid-ng``.

The pytest plugin (module ``pytest_aiopyramid_ng``, entry point ``pytest11``,
installed with the package) does nothing unless asked::

    pytest --aiopyramid-ng=include   # every Configurator includes aiopyramid_ng
    pytest --aiopyramid-ng=asgi      # ... and every webtest.TestApp goes through ASGI

It prints the active mode in the pytest header.  This module does the work;
the plugin imports it only when the option is given, so a test run without
it imports nothing of aiopyramid_ng or Pyramid early.

``include``
    Every :class:`pyramid.config.Configurator` the suite creates (directly,
    as a context manager, through ``main(global_config, **settings)``,
    :func:`pyramid.paster.get_app`, plaster or
    :func:`pyramid.testing.setUp` / :func:`~pyramid.testing.testConfig`)
    gets ``config.include("aiopyramid_ng")``, as if the application's first
    configuration line said so.

``asgi``
    As ``include``, and every ``webtest.TestApp(app)`` the suite creates
    serves ``make_asgi_app(app)`` in-process through
    :class:`aiopyramid_ng.testing.TestApp`: each request is an ASGI exchange,
    with the lifespan startup when the ``TestApp`` is created.  Entries of
    the WSGI environ that an HTTP request cannot carry (a test's
    ``extra_environ={"tm.manager": tm}``) reach the application unchanged,
    and an exception the application raises reaches the test.

How, since the suite is not edited (everything is undone when pytest ends):

* :meth:`Configurator.setup_registry <pyramid.config.Configurator.setup_registry>`
  is wrapped to call ``self.include("aiopyramid_ng")`` when it returns.
  ``Configurator(settings=...)`` runs it once per new registry, right after
  processing the ``pyramid.includes`` setting, so the add-on is included
  where an ``includes`` entry would be, and the settings stay as given;
* :func:`pyramid.testing.setUp`, which builds its registry without
  ``setup_registry``, is wrapped to include the add-on into the
  Configurator it returns;
* with ``asgi``, the names ``webtest.TestApp`` and ``webtest.app.TestApp``
  are bound to a subclass of :class:`aiopyramid_ng.testing.TestApp` that
  accepts the WSGI application.  The patching happens before conftest files
  are imported, so ``from webtest import TestApp`` and subclasses of it in
  the suite get the subclass.  ``TestApp`` objects the suite never closes
  are closed after the test that dropped them, or when the session ends.

Including the add-on twice is harmless (Pyramid includes a callable once per
registry), so an application that already includes it is unaffected.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from typing import Any

import pytest

__all__ = ["MODES", "Activation"]

#: The values of ``--aiopyramid-ng``, each with what it does.
MODES = {
    "include": "every Configurator includes aiopyramid_ng",
    "asgi": "every Configurator includes aiopyramid_ng; webtest.TestApp serves through ASGI",
}


class Activation:
    """The patches of one active mode; :meth:`undo` removes them."""

    def __init__(self, mode: str):
        if mode not in MODES:
            from .exceptions import see

            raise ValueError(
                f"Unknown mode {mode!r} of --aiopyramid-ng: pass one of {', '.join(MODES)}. "
                f"{see('pytest-plugin')}"
            )
        self.mode = mode
        self._patch = pytest.MonkeyPatch()
        self._opened: weakref.WeakSet[Any] = weakref.WeakSet()
        _patch_configurators(self._patch)
        if mode == "asgi":
            _patch_webtest(self._patch, self._opened)

    def after_test(self) -> None:
        """Close the loops of the ``TestApp`` objects the test dropped without closing them.

        A function-scoped fixture often returns a ``TestApp`` and never
        closes it; its loop is closed here, after the fixtures' teardown,
        rather than whenever the next ``TestApp`` is made.
        """
        if self.mode == "asgi":
            from .testing import close_orphaned

            close_orphaned()

    def close_test_apps(self) -> None:
        """Close every ``TestApp`` created under ``asgi`` that is still open."""
        self.after_test()
        for app in list(self._opened):
            self._opened.discard(app)
            try:
                app.close()
            except Exception as exc:
                warnings.warn(
                    f"aiopyramid_ng: closing {app!r} at the end of the session failed: "
                    f"{type(exc).__name__}: {exc}",
                    pytest.PytestWarning,
                    stacklevel=1,
                )

    def undo(self) -> None:
        """Close the open ``TestApp`` objects, then restore what was patched."""
        try:
            self.close_test_apps()
        finally:
            self._patch.undo()


def _include(config: Any) -> None:
    config.include("aiopyramid_ng")


def _patch_configurators(patch: pytest.MonkeyPatch) -> None:
    import pyramid.testing
    from pyramid.config import Configurator
    from pyramid.path import caller_package

    setup_registry = Configurator.setup_registry

    @functools.wraps(setup_registry)
    def setup_registry_including(self: Configurator, *args: Any, **kwargs: Any) -> None:
        setup_registry(self, *args, **kwargs)
        _include(self)

    testing_setup = pyramid.testing.setUp

    @functools.wraps(testing_setup)
    def setup_including(*args: Any, **kwargs: Any) -> Configurator:
        # setUp defaults ``package`` to its caller's package: the caller of
        # this wrapper, not this module.
        if len(args) < 6 and "package" not in kwargs:
            kwargs["package"] = caller_package()
        config: Configurator = testing_setup(*args, **kwargs)
        _include(config)
        return config

    patch.setattr(Configurator, "setup_registry", setup_registry_including)
    patch.setattr(pyramid.testing, "setUp", setup_including)


def _patch_webtest(patch: pytest.MonkeyPatch, opened: weakref.WeakSet[Any]) -> None:
    import webtest
    import webtest.app

    from .testing import TestApp

    class SessionTestApp(TestApp):
        """``webtest.TestApp`` under ``--aiopyramid-ng=asgi``; closed at the end of the session."""

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            opened.add(self)

    # Reported as WebTest's name in the suite's tracebacks and reprs.
    SessionTestApp.__name__ = SessionTestApp.__qualname__ = "TestApp"
    patch.setattr(webtest, "TestApp", SessionTestApp)
    patch.setattr(webtest.app, "TestApp", SessionTestApp)

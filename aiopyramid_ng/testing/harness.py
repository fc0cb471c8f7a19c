"""What WebTest gives a WSGI application, and takes from it, that HTTP over ASGI loses.

A test calls the application directly under WebTest: entries it puts in
the environ (``extra_environ={"tm.manager": tm}``) reach the application,
an exception the application raises reaches the test, and the response's
header names are spelled as the application spelled them.  Over ASGI all
three would be lost: the environ is rebuilt from the scope, the server
turns an exception into a 500, and ASGI header names are lowercase.
:class:`Harness` sits between the ASGI adapter and the application and
carries them across.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..types import Environ, StartResponse, WSGIApp

__all__ = ["Harness", "local_entries"]

# Environ keys an HTTP request carries, or that the ASGI path sets itself.
_REQUEST_KEYS = frozenset(
    {
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "REMOTE_HOST",
    }
)
_REQUEST_PREFIXES = ("HTTP_", "wsgi.", "asgi.", "webob.")


def local_entries(environ: Environ) -> dict[str, Any]:
    """The entries of ``environ`` that a test put there and HTTP cannot carry."""
    return {
        key: value
        for key, value in environ.items()
        if key not in _REQUEST_KEYS and not key.startswith(_REQUEST_PREFIXES)
    }


class Harness:
    """WSGI middleware: the test's environ entries in; the exception and header names out.

    A ``TestApp`` serves one request at a time, so the entries of the
    request in progress and the exception it raised are simply held here.
    """

    def __init__(self, app: WSGIApp):
        #: The application the test handed over (also how
        #: :func:`aiopyramid_ng.asgi.find_registry` looks through this).
        self.app = app
        self.entries: dict[str, Any] = {}
        self.error: BaseException | None = None
        #: The response header names as the application spelled them, by
        #: their lowercase form (the only one ASGI carries).
        self.header_names: dict[str, str] = {}

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        for key, value in self.entries.items():
            # The same objects, not copies: a test reads back what the
            # application wrote into them (``paste.testing_variables``).
            environ.setdefault(key, value)
        names = self.header_names

        def recording_start_response(
            status: str, headers: list[tuple[str, str]], *exc_info: Any
        ) -> Any:
            names.update((name.lower(), name) for name, _ in headers)
            return start_response(status, headers, *exc_info)

        try:
            return self.app(environ, recording_start_response)
        except Exception as exc:
            # Re-raised to the server too, which answers 500 as it would
            # without a test; the TestApp then raises it in the test.
            self.error = exc
            raise

    def take_error(self) -> BaseException | None:
        """The exception the last request raised, if any; forgets it."""
        error, self.error = self.error, None
        return error

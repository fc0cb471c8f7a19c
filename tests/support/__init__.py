"""Everything the tests share; fixtures stay in ``tests/conftest.py``.

* :mod:`~tests.support.apps`: building small applications, and calling one
  as the ASGI adapter does;
* :mod:`~tests.support.leaks`: what a request could leave behind;
* :mod:`~tests.support.probe`: what an application observed;
* :mod:`~tests.support.asgi`: playing the server by hand, for the tests
  :class:`asgiref.testing.ApplicationCommunicator` cannot express;
* :mod:`~tests.support.servers`: real servers on free ports, always stopped;
* :mod:`~tests.support.asgi_app`, :mod:`~tests.support.websocket_app`: the
  applications the ASGI and WebSocket tests serve, and
  :mod:`~tests.support.asgi_server_app`,
  :mod:`~tests.support.websocket_server_app`: the same, as the ASGI
  applications real servers import in a subprocess;
* :mod:`~tests.support.websocket_servers`: those servers for the WebSocket tests;
* :mod:`~tests.support.overload_app`: the bounded application the overload test serves;
* :mod:`~tests.support.plain_views_server_app`: the plain views (one that never
  waits, one that blocks) the adaptive-mapper server test serves;
* :mod:`~tests.support.otel_app`: the traced application the OpenTelemetry server
  test serves, exporting its spans to a file;
* :mod:`~tests.support.compat`: what the ``tests/compat`` tests share.
"""

from pathlib import Path

#: The repository's root directory: ``tests/`` and ``examples/`` are in it.
REPO_ROOT = Path(__file__).resolve().parents[2]

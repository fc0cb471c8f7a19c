"""The ASGI application the WebSocket server tests start in a subprocess.

``WS_TESTS_DIR`` names a directory; :class:`~tests.support.websocket_app.Room`
appends its ``on_close`` calls to ``close.log`` there, which a test reads
after the server exited.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiopyramid_ng.asgi import make_asgi_app
from tests.support.websocket_app import make_router

app = make_asgi_app(
    make_router(**{"ws_tests.close_log": str(Path(os.environ["WS_TESTS_DIR"]) / "close.log")})
)

"""The ASGI application the server tests start in a subprocess.

``ASGI_TESTS_DIR`` names a directory for the served file and for the marker
the shutdown subscriber writes, which the test reads after the server exits.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiopyramid_ng.asgi import make_asgi_app
from tests.support.asgi_app import SERVER_MAX_BODY_SIZE, Middleware, make_router

_directory = Path(os.environ["ASGI_TESTS_DIR"])

app = make_asgi_app(
    Middleware(
        make_router(
            _directory,
            **{
                "asgi_tests.shutdown_file": str(_directory / "shutdown"),
                "aiopyramid_ng.max_body_size": str(SERVER_MAX_BODY_SIZE),
            },
        )
    )
)

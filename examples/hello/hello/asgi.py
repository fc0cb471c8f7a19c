"""The ASGI application, for ASGI servers that import it.

::

    uvicorn hello.asgi:app --workers 4
    gunicorn hello.asgi:app -w 4 -k uvicorn_worker.UvicornWorker

It is built from ``production.ini`` next to the package, or from the ini
file named by the ``HELLO_INI`` environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiopyramid_ng.asgi import from_ini

INI_FILE = os.environ.get(
    "HELLO_INI", str(Path(__file__).resolve().parent.parent / "production.ini")
)

app = from_ini(INI_FILE)

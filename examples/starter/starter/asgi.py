"""The ASGI application, for ASGI servers that import it: ``uvicorn starter.asgi:app``.

It is built from ``production.ini`` next to the package, or from the ini
file named by the ``STARTER_INI`` environment variable.
"""

import os
from pathlib import Path

from aiopyramid_ng.asgi import from_ini

INI_FILE = os.environ.get(
    "STARTER_INI", str(Path(__file__).resolve().parent.parent / "production.ini")
)

app = from_ini(INI_FILE)

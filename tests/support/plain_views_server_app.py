"""The application the adaptive plain-view server test serves with uvicorn in a subprocess.

``/quick`` is a plain view that never waits (promoted after its probation),
``/sleepy`` one that sleeps ``s`` seconds or, without ``s``, waits until
``/release`` is called, and ``/waiting`` says how many ``/sleepy`` calls
wait so; each plain view answers the
name of the thread it ran in.  The ``aiopyramid_ng.adaptive`` logger writes
to the server's output, which the test reads.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from pyramid.config import Configurator
from pyramid.request import Request

from aiopyramid_ng.asgi import make_asgi_app
from tests.support.servers import PATIENCE

_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
_log = logging.getLogger("aiopyramid_ng.adaptive")
_log.addHandler(_handler)
_log.setLevel(logging.DEBUG)

_released = threading.Event()
_lock = threading.Lock()  # never held across a wait
_waiting = [0]


def quick(request: Request) -> dict[str, str]:
    return {"n": request.params["n"], "thread": threading.current_thread().name}


def sleepy(request: Request) -> dict[str, str]:
    if "s" in request.params:
        time.sleep(float(request.params["s"]))
    else:
        with _lock:
            _waiting[0] += 1
        try:
            _released.wait(PATIENCE)
        finally:
            with _lock:
                _waiting[0] -= 1
    return {"thread": threading.current_thread().name}


async def waiting(request: Request) -> dict[str, int]:
    return {"waiting": _waiting[0]}


async def release(request: Request) -> dict[str, bool]:
    _released.set()
    return {"released": True}


with Configurator() as config:
    config.include("aiopyramid_ng")
    for name, view in (
        ("quick", quick),
        ("sleepy", sleepy),
        ("waiting", waiting),
        ("release", release),
    ):
        config.add_route(name, f"/{name}")
        config.add_view(view, route_name=name, renderer="json")
    app = make_asgi_app(config.make_wsgi_app())

"""The ASGI server boundary: serve a Pyramid application (or any WSGI pipeline) over ASGI.

::

    # myapp/asgi.py -- uvicorn myapp.asgi:app --workers 4
    from aiopyramid_ng.asgi import from_ini
    app = from_ini("production.ini")

================  ==================================================================
``app``           the ASGI application: scope dispatch, ``make_asgi_app``, ``from_ini``
``served``        the narrow view of the application the handlers get
``http``          one ``http`` scope: body first, then the WSGI call in a greenlet
``responder``     the WSGI side of one response: ``start_response``, streaming
``environ``       ASGI scope to WSGI environ
``body``          receiving the request body before the application runs
``disconnect``    noticing a client that left while its request waits
``lifespan``      startup and shutdown, by the lifespan protocol or lazily
``connection``    the ASGI side of one WebSocket connection
``websocket``     one ``websocket`` scope: the handshake through the pipeline
================  ==================================================================

Nothing in this package knows of the libraries :mod:`aiopyramid_ng.compat`
adapts.
"""

from __future__ import annotations

from .app import ASGIApplication, find_registry, from_ini, make_asgi_app, make_asgi_app_directive

__all__ = [
    "ASGIApplication",
    "find_registry",
    "from_ini",
    "make_asgi_app",
    "make_asgi_app_directive",
]

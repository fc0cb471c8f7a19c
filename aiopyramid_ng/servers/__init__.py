"""``pserve`` server runners: serve an application with uvicorn, hypercorn or daphne.

Each runner is a PasteDeploy ``paste.server_runner`` entry point of
aiopyramid_ng, used from the ``[server:main]`` section of an ini file::

    [server:main]
    use = egg:aiopyramid_ng#uvicorn
    listen = 127.0.0.1:6543

PasteDeploy calls ``runner(wsgi_app, global_conf, **local_conf)``; the runner
wraps the application (a Router or a whole filter pipeline) with
:func:`aiopyramid_ng.asgi.make_asgi_app` and serves it in the calling
thread until the server stops, or, with ``workers``, from that many
processes forked from this one (:mod:`.workers`).  ``pserve`` owns the process: it has already
configured logging from the ini file, so no runner touches logging
configuration, and ``pserve --reload`` restarts the whole process, so the
runners need nothing special to support it.

Every option arrives as a string.  The runners check each one before serving
and raise :class:`~pyramid.exceptions.ConfigurationError` naming the option,
the bad value and the fix; an option a runner does not know is an error too,
never silently ignored.  :mod:`.options` reads what every runner shares
(addresses, option conversion, the errors); each server's module lists the
options it accepts: :func:`~.uvicorn.uvicorn_options`,
:data:`~.hypercorn.HYPERCORN_OPTIONS` and :data:`~.daphne.DAPHNE_OPTIONS`.
:mod:`.workers` forks and supervises worker processes, :mod:`.sockets`
clears stale unix socket files.  Using one runner never imports the other
servers.
"""

from __future__ import annotations

__all__: list[str] = []

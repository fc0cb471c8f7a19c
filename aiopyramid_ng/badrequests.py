"""A request that cannot be decoded answers 400 Bad Request, not 500.

A client controls the bytes of a request's path, query string and body.
When they are not what the request claims (a path or query string that is
not UTF-8, a body in a charset WebOb refuses or cannot look up, a JSON body
that is not JSON), Pyramid and WebOb raise while decoding them, and without
an exception view for it the client gets a 500 and the log an error with a
traceback.  ``config.include('aiopyramid_ng')`` registers
:func:`bad_request_view`, a default exception view that answers these with
a short ``text/plain`` 400 and logs one ``INFO`` line without a traceback on
the ``aiopyramid_ng.badrequests`` logger.

* :class:`~pyramid.exceptions.URLDecodeError`: the path is not UTF-8
  (URL dispatch, traversal);
* :class:`UnicodeDecodeError`: ``request.path_info``, ``request.params``,
  ``request.GET``, ``request.json_body`` or ``request.text`` meet bytes that
  are not in the request's charset;
* :class:`json.JSONDecodeError`: ``request.json_body`` is not JSON;
* :class:`DeprecationWarning`: ``request.POST`` of a form whose charset is
  not UTF-8 (WebOb refuses any other);
* :class:`LookupError`: ``request.json_body`` or ``request.text`` of a body
  whose charset Python does not know.

(WebOb decodes the fields of a UTF-8 form with replacement characters: a
form body such as ``a=%FF`` reaches the view as ``"\\ufffd"``, no error.)

Only the request's own decoding answers 400.  The same exception raised by
the application's code, say ``upstream_bytes.decode()`` or
``json.loads(cached)``, is a server error and stays one: the view tells the
two apart by where the exception was raised, the innermost frame of its
traceback, skipping the standard library's decoders (``json``, ``codecs``,
``encodings``, ``urllib.parse``), which must be WebOb's request parsing
(``webob.request``, ``webob.multidict``, ``webob.compat``,
``webob.descriptors``).  A :class:`~pyramid.exceptions.URLDecodeError` is
always the URL's: Pyramid raises it only for that.  An application that
decodes data of its own with WebOb's request machinery
(``Request.blank(upstream_body).json_body``) gets 400s for that data too.

The application's own exception views win.  An exception view registered
by the application for one of these exceptions, or for a base class
(``@exception_view_config(Exception)``, ``context=ValueError``), answers
instead of this one.  Pyramid alone would
pick this view for a ``UnicodeDecodeError`` over the application's view for
``Exception`` (it looks views up along the exception's MRO, most specific
first), so the view defers: before answering, it asks Pyramid for the
exception view the application would have had without it
(``request.invoke_exception_view`` again, in which this view declines) and
returns that response if there is one.  Pyramid's own lookup decides, with
every predicate (``route_name``, ``request_method``, ...) and permission of
the application's views, so the answer is the one the application would
give without the add-on.  The registration carries the
``aiopyramid_ng_bad_input`` view predicate, which also keeps its
discriminator apart from the application's registrations for the same
exception (no configuration conflict, whichever ``include`` they come from).

The view is a plain function mapped by
:class:`~aiopyramid_ng.mappers.GreenletMapper`: it runs where Pyramid calls
it, without a hop to the thread pool.
"""

from __future__ import annotations

import json
import logging
from types import TracebackType
from typing import Any

from pyramid.config import Configurator
from pyramid.exceptions import PredicateMismatch, URLDecodeError
from pyramid.httpexceptions import HTTPBadRequest
from pyramid.request import Request

from .mappers import GreenletMapper

__all__ = ["PREDICATE", "bad_request_view", "includeme", "is_bad_input"]

logger = logging.getLogger(__name__)

#: The name of the view predicate of :func:`bad_request_view`'s registrations.
PREDICATE = "aiopyramid_ng_bad_input"

#: The exceptions the view is registered for, and the body it answers each with.
_CONTEXTS: dict[type[BaseException], str] = {
    UnicodeDecodeError: "Bad Request: the request is not valid UTF-8\n",
    json.JSONDecodeError: "Bad Request: the request body is not valid JSON\n",
    DeprecationWarning: "Bad Request: the request charset is not supported\n",
    LookupError: "Bad Request: the request charset is not supported\n",
}

#: Where WebOb decodes a request's path, query string, headers and body.
_REQUEST_PARSERS = frozenset(
    {"webob.request", "webob.multidict", "webob.compat", "webob.descriptors"}
)
#: Standard library decoders WebOb calls; the frame that called them decides.
_DECODERS = frozenset({"json", "json.decoder", "codecs", "urllib.parse"})

#: Set in the environ while the view asks Pyramid for the application's own view.
_DEFERRING = "aiopyramid_ng.badrequests.deferring"


def _innermost_caller(tb: TracebackType | None) -> tuple[str, str]:
    """Return the module and function of the innermost frame outside the stdlib decoders."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        module = frame.f_globals.get("__name__", "")
        if module not in _DECODERS and not module.startswith("encodings."):
            return module, frame.f_code.co_name
    return "", ""


def is_bad_input(exc: BaseException) -> bool:
    """Was ``exc`` raised by Pyramid or WebOb decoding what the client sent?"""
    if isinstance(exc, URLDecodeError):
        return True
    if not isinstance(exc, (UnicodeDecodeError, json.JSONDecodeError)) and type(exc) not in (
        DeprecationWarning,
        LookupError,
    ):
        # LookupError exactly (an unknown codec), not KeyError or IndexError.
        return False
    module, function = _innermost_caller(exc.__traceback__)
    if type(exc) is DeprecationWarning:
        return module == "webob.request" and function == "_check_charset"
    return module in _REQUEST_PARSERS


class _BadInputPredicate:
    """The ``aiopyramid_ng_bad_input`` view predicate: the context is bad client input.

    False while :func:`bad_request_view` asks Pyramid for the application's
    own exception view, so that the lookup passes this view by.
    """

    def __init__(self, value: bool, info: Any) -> None:
        self.value = value

    def text(self) -> str:
        return f"{PREDICATE} = {self.value}"

    phash = text

    def __call__(self, context: Any, request: Request) -> bool:
        if request.environ.get(_DEFERRING):
            return False
        return is_bad_input(context) == self.value


def _describe(request: Request, exc: BaseException) -> str:
    # What the client sent, escaped (repr) and cut short: it may hold anything.
    path = request.environ.get("PATH_INFO", "")
    return f"{request.method} {path[:200]!r}: {type(exc).__name__}: {str(exc)[:200]!r}"


def bad_request_view(context: BaseException, request: Request) -> Any:
    """Answer a request that cannot be decoded with a plain 400, unless the application answers.

    :raises PredicateMismatch: never for the caller to see; Pyramid catches
        it and tries the next exception view.
    """
    exc_info = request.exc_info or (type(context), context, context.__traceback__)
    request.environ[_DEFERRING] = True
    try:
        # The application's own exception view for this exception, as Pyramid
        # would pick it without this one (which declines while deferring).
        return request.invoke_exception_view(exc_info)
    except PredicateMismatch:
        pass  # there is none, or none of them matched this request
    finally:
        request.environ.pop(_DEFERRING, None)
    logger.info("400 Bad Request: %s", _describe(request, context))
    body = next(text for kind, text in _CONTEXTS.items() if isinstance(context, kind))
    return HTTPBadRequest(body=body, content_type="text/plain", charset="utf-8")


def includeme(config: Configurator) -> None:
    """Register :func:`bad_request_view` for the exceptions of undecodable requests."""
    config.add_view_predicate(PREDICATE, _BadInputPredicate)
    for context in _CONTEXTS:
        config.add_exception_view(
            bad_request_view, context=context, mapper=GreenletMapper, **{PREDICATE: True}
        )

"""Every ``aiopyramid_ng.*`` setting: its name, default, reader and error text.

Each setting is one :class:`Setting` in :data:`SETTINGS`; the module that
uses it reads it with :meth:`Setting.read`, which checks the value and words
the error.  ``config.include('aiopyramid_ng')`` calls :func:`check_settings`
at commit, so a bad value, or a name that is not in the table (a typo),
fails at start-up naming the setting and the fix.  ``docs/configuration.rst``
documents exactly these settings; a test keeps the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from pyramid.exceptions import ConfigurationError
from pyramid.settings import falsey, truthy

from .exceptions import see

__all__ = [
    "BACKGROUND_SHUTDOWN_TIMEOUT",
    "BLOCKING_MS",
    "BROADCAST_OVERFLOW",
    "BROADCAST_QUEUE_SIZE",
    "BROADCAST_TIMEOUT",
    "BROADCAST_URL",
    "COMPAT_DISABLE",
    "GC_FREEZE",
    "INLINE_MS",
    "MAX_BODY_SIZE",
    "MAX_CONCURRENCY",
    "MAX_QUEUE",
    "MAX_WORKERS",
    "PIPELINE",
    "PLAIN_VIEWS",
    "PREFIX",
    "RETRY_AFTER",
    "SETTINGS",
    "TIMEOUT",
    "WEBSOCKET_ALLOWED_ORIGINS",
    "Setting",
    "boolean",
    "check_settings",
]

T = TypeVar("T")

#: Every setting of the add-on starts with this.
PREFIX = "aiopyramid_ng."


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting: ``parse`` turns the raw value into ``T`` or raises ``ValueError``.

    ``expected`` describes a valid value and ``fix`` says what to set, and
    ``docs`` is the reference to the setting's section, all for the error
    message; ``summary`` is the one line the docs table shows.
    """

    name: str
    default: T
    parse: Callable[[Any], T]
    expected: str
    fix: str
    summary: str
    docs: str

    def read(self, settings: Mapping[str, Any] | None) -> T:
        """Return the value in ``settings`` (or the default), checked.

        :raises ConfigurationError: naming the setting, the value and the fix.
        """
        raw = (settings or {}).get(self.name)
        if raw is None:
            return self.default
        try:
            return self.parse(raw)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"The setting {self.name} = {raw!r} is not {self.expected}; {self.fix}. {self.docs}"
            ) from None


def _positive(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(raw: Any) -> Any:
        value = convert(str(raw).strip() if isinstance(raw, str) else raw)
        if not value > 0:  # also rejects nan
            raise ValueError(raw)
        return value

    return parse


def _optional(parse: Callable[[Any], T]) -> Callable[[Any], T | None]:
    """``parse``, with an empty value (``key =`` in an ini file) meaning unset."""

    def parse_optional(raw: Any) -> T | None:
        if str(raw).strip() == "":
            return None
        return parse(raw)

    return parse_optional


_optional_positive_float: Callable[[Any], float | None] = _optional(_positive(float))
_optional_positive_int: Callable[[Any], int | None] = _optional(_positive(int))


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = str(raw).strip()
        if value not in choices:
            raise ValueError(raw)
        return value

    return parse


def boolean(raw: Any) -> bool:
    """A boolean, or a word Pyramid reads as one (``true``/``false``, ``yes``/``no``, ...).

    Unlike :func:`pyramid.settings.asbool`, a word that is neither (a typo)
    is refused instead of read as false.
    """
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in truthy:
        return True
    if word in falsey:
        return False
    raise ValueError(raw)


def _words(raw: Any) -> tuple[str, ...]:
    """A whitespace-separated string (as in an ini file) or a list of strings."""
    words = raw.split() if isinstance(raw, str) else list(raw)
    if not all(isinstance(word, str) for word in words):
        raise ValueError(raw)
    return tuple(words)


def _broadcast_url(raw: Any) -> str:
    """``memory://`` (this process), or a Redis URL naming its host."""
    url = str(raw).strip()
    if url == "memory://":
        return url
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss") and parts.hostname:
        _ = parts.port  # ValueError for a port that is not a number from 0 to 65535
        database = parts.path.lstrip("/")
        if database == "" or database.isdigit():
            return url
    raise ValueError(raw)


#: The pool size when ``aiopyramid_ng.executor.max_workers`` is absent: the
#: standard library's default for thread pools, ``min(32, os.cpu_count() + 4)``.
DEFAULT_MAX_WORKERS = min(32, (os.cpu_count() or 1) + 4)

MAX_BODY_SIZE: Setting[int] = Setting(
    name="aiopyramid_ng.max_body_size",
    default=10 * 1024 * 1024,
    parse=_positive(int),
    expected="a positive whole number",
    fix="set it to the largest request body to accept, in bytes (default 10485760)",
    summary="Largest request body accepted under ASGI, in bytes; larger ones get 413.",
    docs=see("setting-max-body-size"),
)

MAX_WORKERS: Setting[int] = Setting(
    name="aiopyramid_ng.executor.max_workers",
    default=DEFAULT_MAX_WORKERS,
    parse=_positive(int),
    expected="a positive whole number",
    fix=f"set it to the number of threads for blocking views (default {DEFAULT_MAX_WORKERS})",
    summary="Threads of the application's pool for plain views and use_executor functions.",
    docs=see("setting-max-workers"),
)

PIPELINE: Setting[str] = Setting(
    name="aiopyramid_ng.pipeline",
    default="greenlet",
    parse=_choice("greenlet", "executor"),
    expected="one of 'greenlet' or 'executor'",
    fix="write greenlet (run the synchronous pipeline in the request greenlet, on the event "
    "loop) or executor (run it in the thread pool, for applications whose hooks block)",
    summary="Where the synchronous pipeline (tweens, traversal, security) runs.",
    docs=see("setting-pipeline"),
)

PLAIN_VIEWS: Setting[str] = Setting(
    name="aiopyramid_ng.plain_views",
    default="adaptive",
    parse=_choice("adaptive", "executor"),
    expected="one of 'adaptive' or 'executor'",
    fix="write adaptive (plain views of the default mapper start in the thread pool and run in "
    "the request greenlet once they have shown they never wait) or executor (they always run "
    "in the thread pool)",
    summary="Where the default mapper runs plain views: adaptive, or always in the thread pool.",
    docs=see("setting-plain-views"),
)

INLINE_MS: Setting[float] = Setting(
    name="aiopyramid_ng.plain_views.inline_ms",
    default=10.0,
    parse=_positive(float),
    expected="a positive number of milliseconds",
    fix="set it to the longest a plain view may hold the event loop, in milliseconds (default 10)",
    summary="Longest a plain view may hold the event loop before it goes back to the pool, in ms.",
    docs=see("setting-plain-views-inline-ms"),
)

BLOCKING_MS: Setting[float | None] = Setting(
    name="aiopyramid_ng.debug.blocking_ms",
    default=None,
    parse=_optional_positive_float,
    expected="a positive number of milliseconds",
    fix="set it to the longest run on the event loop to tolerate, in milliseconds (say 100), "
    "or remove it to turn the blocking detector off",
    summary="Log every run on the event loop longer than this many milliseconds.",
    docs=see("setting-blocking-ms"),
)

WEBSOCKET_ALLOWED_ORIGINS: Setting[tuple[str, ...]] = Setting(
    name="aiopyramid_ng.websocket.allowed_origins",
    default=(),
    parse=_words,
    expected="a list of origins",
    fix="list origins separated by spaces, as scheme://host[:port], or * for any",
    summary="Origins whose pages may open WebSocket connections, besides the host's own.",
    docs=see("setting-allowed-origins"),
)

COMPAT_DISABLE: Setting[tuple[str, ...]] = Setting(
    name="aiopyramid_ng.compat.disable",
    default=(),
    parse=_words,
    expected="a list of adaptation names",
    fix="list names from aiopyramid_ng.compat.ADAPTATIONS separated by spaces",
    summary="Adaptations of other libraries not to install (see Compatibility).",
    docs=see("setting-compat-disable"),
)

GC_FREEZE: Setting[bool] = Setting(
    name="aiopyramid_ng.gc.freeze_after_startup",
    default=False,
    parse=boolean,
    expected="true or false",
    fix="write true to move the objects alive after startup out of the collector's way, "
    "or false (the default) to leave the garbage collector as Python sets it",
    summary="Collect, then gc.freeze() the objects alive once the application has started.",
    docs=see("setting-gc-freeze"),
)

BROADCAST_URL: Setting[str] = Setting(
    name="aiopyramid_ng.broadcast.url",
    default="memory://",
    parse=_broadcast_url,
    expected="memory:// or a redis:// or rediss:// URL with a host",
    fix="write memory:// (groups of this process only, the default) or the URL of a Redis "
    "server shared by every process, such as redis://localhost:6379/0",
    summary="Where broadcast messages travel: memory:// (this process) or a Redis URL.",
    docs=see("setting-broadcast-url"),
)

BROADCAST_TIMEOUT: Setting[float] = Setting(
    name="aiopyramid_ng.broadcast.timeout",
    default=5.0,
    parse=_positive(float),
    expected="a positive number of seconds",
    fix="set it to the longest wait for the broadcast backend to connect or to take a "
    "message, in seconds (default 5)",
    summary="Seconds the broadcast backend may take to connect or to take a message.",
    docs=see("setting-broadcast-timeout"),
)

BROADCAST_QUEUE_SIZE: Setting[int] = Setting(
    name="aiopyramid_ng.broadcast.queue_size",
    default=64,
    parse=_positive(int),
    expected="a positive whole number",
    fix="set it to the number of broadcast messages that may wait for one slow WebSocket "
    "member (default 64)",
    summary="Broadcast messages that may wait for one WebSocket member before it overflows.",
    docs=see("setting-broadcast-queue-size"),
)

BROADCAST_OVERFLOW: Setting[str] = Setting(
    name="aiopyramid_ng.broadcast.overflow",
    default="close",
    parse=_choice("close", "drop_oldest"),
    expected="one of 'close' or 'drop_oldest'",
    fix="write close (close a member whose queue is full with 1013, the default) or "
    "drop_oldest (drop its oldest waiting messages instead)",
    summary="What happens to a WebSocket member whose broadcast queue is full.",
    docs=see("setting-broadcast-overflow"),
)

BACKGROUND_SHUTDOWN_TIMEOUT: Setting[float] = Setting(
    name="aiopyramid_ng.background.shutdown_timeout",
    default=10.0,
    parse=_positive(float),
    expected="a positive number of seconds",
    fix="set it to the longest wait for running background tasks at shutdown (and, in "
    "WSGI mode, in a response's close()), in seconds (default 10)",
    summary="Seconds the shutdown waits for background tasks before cancelling them.",
    docs=see("setting-background-shutdown-timeout"),
)

TIMEOUT: Setting[float | None] = Setting(
    name="aiopyramid_ng.timeout",
    default=None,
    parse=_optional_positive_float,
    expected="a positive number of seconds",
    fix="set it to the longest time a request may take before it is answered 504, in "
    "seconds (say 30), or remove it for no deadline",
    summary="Seconds a request may take before it is cancelled and answered 504.",
    docs=see("setting-timeout"),
)

MAX_CONCURRENCY: Setting[int | None] = Setting(
    name="aiopyramid_ng.max_concurrency",
    default=None,
    parse=_optional_positive_int,
    expected="a positive whole number",
    fix="set it to the most requests the application may serve at once (say 100); beyond "
    "it requests are answered 503 at once. Remove it for no limit",
    summary="Requests the application serves at once; beyond it, 503 with Retry-After.",
    docs=see("setting-max-concurrency"),
)

RETRY_AFTER: Setting[int] = Setting(
    name="aiopyramid_ng.retry_after",
    default=1,
    parse=_positive(int),
    expected="a positive whole number",
    fix="set it to the seconds a shed client should wait before trying again (default 1)",
    summary="The Retry-After header, in seconds, of the 503 answered to a shed request.",
    docs=see("setting-retry-after"),
)

MAX_QUEUE: Setting[int | None] = Setting(
    name="aiopyramid_ng.executor.max_queue",
    default=None,
    parse=_optional_positive_int,
    expected="a positive whole number",
    fix="set it to the most pieces of blocking work that may wait for a free pool thread "
    "(say 64), or remove it for an unbounded queue",
    summary="Blocking work that may wait for a pool thread; beyond it, ExecutorQueueFull (503).",
    docs=see("setting-max-queue"),
)

#: Every setting, by name.
SETTINGS: dict[str, Setting[Any]] = {
    setting.name: setting
    for setting in (
        MAX_BODY_SIZE,
        MAX_WORKERS,
        PIPELINE,
        PLAIN_VIEWS,
        INLINE_MS,
        BLOCKING_MS,
        WEBSOCKET_ALLOWED_ORIGINS,
        COMPAT_DISABLE,
        GC_FREEZE,
        BROADCAST_URL,
        BROADCAST_TIMEOUT,
        BROADCAST_QUEUE_SIZE,
        BROADCAST_OVERFLOW,
        BACKGROUND_SHUTDOWN_TIMEOUT,
        TIMEOUT,
        MAX_CONCURRENCY,
        RETRY_AFTER,
        MAX_QUEUE,
    )
}


def check_settings(settings: Mapping[str, Any] | None) -> None:
    """Read every setting once, and refuse ``aiopyramid_ng.*`` names not in the table.

    :raises ConfigurationError: for a bad value or an unknown name; the
        message suggests the closest known name.
    """
    for setting in SETTINGS.values():
        setting.read(settings)
    for name in settings or {}:
        if name.startswith(PREFIX) and name not in SETTINGS:
            import difflib  # only on this error: not a cost of every start-up

            close = difflib.get_close_matches(name, SETTINGS, n=1)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(SETTINGS)}."
            raise ConfigurationError(
                f"Unknown setting {name}: aiopyramid_ng has no such setting; {hint} Correct "
                f"the name, or remove the line. {see('settings')}"
            )

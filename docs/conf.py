"""Sphinx configuration for aiopyramid_ng."""

import configparser
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

_setup_cfg = configparser.ConfigParser()
_setup_cfg.read(os.path.join(ROOT, "setup.cfg"))

project = "aiopyramid_ng"
author = "aiopyramid_ng contributors"
copyright = "aiopyramid_ng contributors"
release = _setup_cfg["metadata"]["version"]
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

# No intersphinx mapping: the documentation must build offline.

templates_path: list[str] = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Every cross-reference must resolve.  The documentation builds offline (no
# intersphinx), so references into the standard library and the libraries
# the add-on works with cannot resolve here: those, and the type variables
# autodoc prints from signatures, are the only ones let through.
nitpicky = True
_EXTERNAL = (
    "asyncio|collections|concurrent|contextvars|threading|typing|types|inspect|logging|mmap"
    "|pyramid|webob|webtest|zope|transaction|pyramid_tm|sqlalchemy|greenlet"
    "|uvicorn|hypercorn|daphne|websockets|asgiref|paste|plaster|opentelemetry"
)
nitpick_ignore_regex = [
    (r"py:.*", rf"~?({_EXTERNAL})(\..+)?"),
    # Pyramid's names as its docs spell them, unqualified.
    (r"py:.*", r"(ConfigurationError|Configurator|Registry|Request|IRequest|ISecurityPolicy)"),
    (r"py:class", r"<InterfaceClass pyramid\.interfaces\.\w+>"),
    # asgiref's scope TypedDicts, as aiopyramid_ng.types re-exports them.
    (r"py:class", r"(HTTPScope|WebSocketScope|LifespanScope)"),
    # Type variables in signatures (T, P, PolicyT, aiopyramid_ng.helpers.T).
    (r"py:(class|obj)", r"(.+\.)?~?(T|P|PolicyT)"),
    # Type aliases as autodoc prints them from annotations: the vocabulary
    # of aiopyramid_ng.types and of the modules that name their callables.
    (r"py:class", r"(Environ|WSGIApp|ASGIApp|Receive|Send|Scope|Message|StartResponse|ExcInfo)"),
    (r"py:class", r"(Pipeline|ExecutionPolicy|Tweens|Handler|View|Executor|Connection)"),
    # OpenTelemetry's names as its signatures spell them, and the otel package's alias.
    (r"py:class", r"(TracerProvider|MeterProvider|Context|Attributes)"),
    # The testing module's loop owner, in the signatures of the objects a
    # TestApp makes (a test never builds them).
    (r"py:class", r"TestLoop"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"

html_theme = "alabaster"
html_static_path: list[str] = []

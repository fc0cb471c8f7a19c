"""Error messages end with a reference to the docs section that explains them.

Every reference is made by :func:`aiopyramid_ng.exceptions.see`, from the one
table :data:`~aiopyramid_ng.exceptions.DOCS_PAGES`; these tests keep that
table, the labels the package passes to ``see`` and the docs in step.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.response import Response

from aiopyramid_ng.exceptions import DOCS_PAGES, see
from aiopyramid_ng.mappers import CoroutineMapper
from aiopyramid_ng.servers.options import parse_addresses, parse_options, parse_unix_socket
from aiopyramid_ng.servers.uvicorn import uvicorn_options
from tests.support import REPO_ROOT

PACKAGE = REPO_ROOT / "aiopyramid_ng"
DOCS = REPO_ROOT / "docs"


def labels_in(page: str) -> set[str]:
    text = (DOCS / f"{page}.rst").read_text()
    return set(re.findall(r"^\.\. _([A-Za-z0-9_-]+):\s*$", text, re.MULTILINE))


def see_calls(path: Path) -> list[tuple[int, ast.expr]]:
    """The first argument of every call of ``see`` in ``path``, with its line."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) == "see"
        ):
            calls.append((node.lineno, node.args[0] if node.args else node))
    return calls


def test_every_label_passed_to_see_is_in_the_docs_page_the_table_names() -> None:
    used: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, argument in see_calls(path):
            where = f"{path.relative_to(REPO_ROOT)}:{line}"
            assert isinstance(argument, ast.Constant) and isinstance(argument.value, str), (
                f"{where}: see() takes a literal label, so that this test can check it"
            )
            label = argument.value
            assert label in DOCS_PAGES, f"{where}: {label!r} is not in DOCS_PAGES"
            page = DOCS_PAGES[label]
            assert label in labels_in(page), f"{where}: no `.. _{label}:` in docs/{page}.rst"
            used.add(label)
    assert used, "no call of see() found"
    assert set(DOCS_PAGES) == used, (
        f"labels in DOCS_PAGES no message uses: {set(DOCS_PAGES) - used}"
    )


def test_every_label_of_the_table_is_in_its_page() -> None:
    for label, page in DOCS_PAGES.items():
        assert label in labels_in(page), f"no `.. _{label}:` in docs/{page}.rst"


def test_see_names_the_page_and_the_anchor() -> None:
    assert see("setting-pipeline") == (
        "See configuration.html#setting-pipeline in the aiopyramid_ng documentation."
    )


# Errors raised while a configuration is committed reach the caller inside
# Pyramid's ConfigurationExecutionError, which appends where the action was
# configured: those messages contain the reference rather than end with it.


def make(**settings: object) -> None:
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        config.make_wsgi_app()


def test_a_bad_setting_value_names_the_fix_and_the_setting_section() -> None:
    with pytest.raises(ConfigurationError) as caught:
        make(**{"aiopyramid_ng.pipeline": "threads"})
    message = str(caught.value)
    assert "aiopyramid_ng.pipeline = 'threads' is not one of 'greenlet' or 'executor'" in message
    assert "write greenlet" in message
    assert see("setting-pipeline") in message


def test_an_unknown_setting_names_the_closest_one_and_the_settings_section() -> None:
    with pytest.raises(ConfigurationError) as caught:
        make(**{"aiopyramid_ng.executor.max_worker": "4"})
    message = str(caught.value)
    assert "did you mean aiopyramid_ng.executor.max_workers?" in message
    assert see("settings") in message


def test_a_wrong_mapper_names_the_view_the_fix_and_the_mappers_section() -> None:
    def plain_view(request: object) -> Response:
        return Response("plain")

    with pytest.raises(ConfigurationError) as caught, Configurator() as config:
        config.include("aiopyramid_ng")
        config.add_route("plain", "/plain")
        config.add_view(plain_view, route_name="plain", mapper=CoroutineMapper)
        config.make_wsgi_app()
    message = str(caught.value)
    assert "CoroutineMapper cannot map" in message and "plain_view" in message
    assert "Declare it `async def`" in message
    assert see("quickstart-mappers") in message


def test_server_option_errors_name_the_runner_section() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_options("uvicorn", {"timeout_keep_alive": "soon"}, uvicorn_options())
    message = str(caught.value)
    assert "timeout_keep_alive = 'soon' is not valid" in message
    assert message.endswith(see("runner-uvicorn"))
    with pytest.raises(ConfigurationError) as caught:
        parse_unix_socket("uvicorn", {"uds": "/tmp/app.sock", "port": "80"})
    assert str(caught.value).endswith(see("runner-unix-socket"))
    with pytest.raises(ConfigurationError) as caught:
        parse_addresses("daphne", {"listen": "6543"}, many=False)
    message = str(caught.value)
    assert "listen = '6543' is not host:port" in message
    assert message.endswith(see("deployment-runners"))

"""One settings table: every setting checked at commit, documented, and typos refused."""

from __future__ import annotations

import re
import sys

import pytest
import transaction
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError

from aiopyramid_ng import settings as settings_module
from aiopyramid_ng.compat.transaction import ContextTransactionManager
from aiopyramid_ng.settings import SETTINGS
from tests.support import REPO_ROOT

PACKAGE = REPO_ROOT / "aiopyramid_ng"


def make(**settings: object) -> None:
    with Configurator(settings=settings) as config:
        config.include("aiopyramid_ng")
        config.make_wsgi_app()


def test_the_configuration_page_lists_exactly_the_settings_table() -> None:
    page = (REPO_ROOT / "docs" / "configuration.rst").read_text()
    documented = set(re.findall(r"^``(aiopyramid_ng\.[a-z_.]+)``$", page, re.MULTILINE))
    assert documented == set(SETTINGS)


def test_no_module_but_settings_defines_a_setting_name() -> None:
    quoted = re.compile(r"""["']aiopyramid_ng\.(?:[a-z_]+\.)*[a-z_]+["']""")
    for path in PACKAGE.rglob("*.py"):
        if path.name == "settings.py":
            continue
        names = {name.strip("\"'") for name in quoted.findall(path.read_text())}
        assert names.isdisjoint(SETTINGS), (path, names & set(SETTINGS))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("aiopyramid_ng.executor.max_workers", "0", "is not a positive whole number"),
        ("aiopyramid_ng.max_body_size", "lots", "is not a positive whole number"),
        ("aiopyramid_ng.pipeline", "threads", "is not one of 'greenlet' or 'executor'"),
        ("aiopyramid_ng.debug.blocking_ms", "-1", "is not a positive number"),
    ],
)
def test_a_bad_value_fails_at_commit_naming_the_setting(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"{name} = {value!r} {message}")):
        make(**{name: value})


def test_a_misspelt_setting_fails_naming_the_closest_one() -> None:
    with pytest.raises(ConfigurationError) as caught:
        make(**{"aiopyramid_ng.executor.max_worker": "4"})
    assert "Unknown setting aiopyramid_ng.executor.max_worker" in str(caught.value)
    assert "did you mean aiopyramid_ng.executor.max_workers?" in str(caught.value)


def test_settings_of_other_packages_are_not_checked() -> None:
    make(**{"aiopyramid_ngx.anything": "1", "pyramid.reload_templates": "true"})


def test_every_setting_has_its_summary_and_fix() -> None:
    for setting in SETTINGS.values():
        assert setting.name.startswith(settings_module.PREFIX)
        assert setting.summary.endswith(".")
        assert setting.fix and setting.expected


def test_an_unknown_adaptation_name_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="names nosuch, which aiopyramid_ng does not"):
        make(**{"aiopyramid_ng.compat.disable": "transaction nosuch"})


def test_a_disabled_adaptation_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    # The manager's class is process-wide: put the stock one back afterwards.
    monkeypatch.setattr(transaction.manager, "__class__", type(transaction.manager))
    monkeypatch.setattr(transaction.manager, "__class__", transaction.ThreadTransactionManager)
    with_tm = {"pyramid.includes": "pyramid_tm"}
    make(**with_tm, **{"aiopyramid_ng.compat.disable": "transaction"})
    assert not isinstance(transaction.manager, ContextTransactionManager)
    # Installed only when the application includes pyramid_tm, the library
    # it adapts; the transaction package being importable is not enough.
    make()
    assert not isinstance(transaction.manager, ContextTransactionManager)
    make(**with_tm)
    assert isinstance(transaction.manager, ContextTransactionManager)
    assert "aiopyramid_ng.compat.transaction" in sys.modules

"""Pyramid's published applications pass their own, unchanged tests with the add-on.

Every application of the Pyramid sdist (see :mod:`tests.support.corpus`)
runs its own suite stock, with ``--aiopyramid-ng=include`` and with
``--aiopyramid-ng=asgi``.  A test that passes stock and not with the add-on
is a regression: a bug of the add-on, unless it is one of
:data:`KNOWN_DIFFERENCES`, each of which ``docs/compatibility.rst``
explains under its test id.  A known difference that no longer happens
fails too (strictly), so the list never outlives its cause.  The table of
every run is printed at the end of the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from packaging.requirements import Requirement

from tests.support import REPO_ROOT, corpus

pytestmark = pytest.mark.slow

#: (application, mode, test id) -> why the add-on changes its outcome.
#: Each is explained in docs/compatibility.rst under its test id.
KNOWN_DIFFERENCES: dict[tuple[str, str, str], str] = {}

#: The suite is real only if the baseline is: what stock Pyramid 2.1 passes.
MIN_APPS = 36
MIN_STOCK_PASSED = 480


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[list[corpus.Outcome]]:
    root = tmp_path_factory.mktemp("corpus")
    sdist = corpus.extract(corpus.fetch_sdist(), root / "src")
    apps = corpus.discover(sdist)
    requirements: list[Requirement] = []
    for number, (project, version) in enumerate(corpus.ADD_ONS.items()):
        app, needed = corpus.add_on(project, version, root / f"add-on-{number}")
        apps.append(app)
        requirements += needed
    reports = root / "reports"
    reports.mkdir()
    workers = (os.cpu_count() or 1) + 1
    with ThreadPoolExecutor(workers) as pool:
        packaged = [app for app in apps if app.packaged]
        for declared in pool.map(corpus.build_metadata, packaged):
            requirements += declared
        corpus.install_missing(requirements)

        def every_mode(app: corpus.App) -> list[corpus.Outcome]:
            # One application's modes one after the other: they share its
            # directory (its SQLite or ZODB file).  A suite of which nothing
            # passes stock cannot regress: it runs stock only.
            stock = corpus.run(app, "stock", reports)
            if not stock.passed:
                return [stock]
            return [stock, *(corpus.run(app, mode, reports) for mode in corpus.MODES[1:])]

        found = [outcome for runs in pool.map(every_mode, apps) for outcome in runs]
    pytestconfig.stash[corpus.OUTCOMES] = found
    yield found


def by_app(outcomes: list[corpus.Outcome], mode: str) -> dict[str, corpus.Outcome]:
    return {outcome.app: outcome for outcome in outcomes if outcome.mode == mode}


def test_the_baseline_is_real(outcomes: list[corpus.Outcome]) -> None:
    stock = by_app(outcomes, "stock")
    assert len(stock) >= MIN_APPS, sorted(stock)
    assert sum(outcome.count("passed") for outcome in stock.values()) >= MIN_STOCK_PASSED
    # Every suite ran, at least up to its conftest.
    assert [outcome.app for outcome in outcomes if not outcome.results] == []


@pytest.mark.parametrize("mode", ["include", "asgi"])
def test_no_undocumented_regression(outcomes: list[corpus.Outcome], mode: str) -> None:
    stock = by_app(outcomes, "stock")
    regressions: set[tuple[str, str, str]] = set()
    for app, outcome in by_app(outcomes, mode).items():
        regressions |= {(app, mode, test) for test in stock[app].passed - outcome.passed}
    known = {key for key in KNOWN_DIFFERENCES if key[1] == mode}
    details = {outcome.app: outcome.output for outcome in outcomes if outcome.mode == mode}
    unexpected = sorted(regressions - known)
    assert unexpected == [], "Passes stock, fails with the add-on:\n" + "\n".join(
        f"  {app} {test}\n{details[app]}" for app, _, test in unexpected
    )
    documentation = (REPO_ROOT / "docs" / "compatibility.rst").read_text()
    undocumented = sorted(key for key in known if key[2] not in documentation)
    assert undocumented == [], "Explain these in docs/compatibility.rst under their test id"
    gone = sorted(known - regressions)
    assert gone == [], f"Known differences that no longer happen (remove them): {gone}"

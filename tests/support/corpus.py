"""Pyramid's own published applications and their own tests, run unchanged.

The Pyramid sdist of the installed version (downloaded from the package
index, cached under ``.cache/corpus``) carries the applications of its
documentation — ``docs/narr/myproject``, ``docs/quick_tour/*``,
``docs/quick_tutorial/*``, the ZODB wiki (``docs/tutorials/wiki/src/*``) and
the SQLAlchemy wiki (``docs/tutorials/wiki2/src/*``) — each with its tests,
and Pyramid's functional tests (``tests/test_integration.py``) with their
fixture packages; besides them, the own suites of the Pyramid add-ons in
:data:`ADD_ONS` (Cornice).  Each is extracted into a temporary directory, never
edited, and its tests run in a pytest subprocess of their own, in three
modes: ``stock`` (the baseline), ``include`` and ``asgi`` (the pytest
plugin's ``--aiopyramid-ng`` modes).

An application is not installed: its metadata (``egg_info``, what ``pip
install -e`` would also write) is built next to its sources, so its entry
points (``use = egg:tutorial``) resolve from its own directory, and the 26
packages all named ``tutorial`` never meet.  What the applications declare
they need is installed into the running environment once.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support import REPO_ROOT

#: The modes each application's suite runs in.
MODES = ("stock", "include", "asgi")

#: Where the downloaded sdist is kept between runs.
CACHE = REPO_ROOT / ".cache" / "corpus"

#: The directories of the sdist holding applications, one per subdirectory.
APP_ROOTS = (
    "docs/quick_tour",
    "docs/quick_tutorial",
    "docs/tutorials/wiki/src",
    "docs/tutorials/wiki2/src",
)

#: Pyramid add-ons whose own test suites run too, at a pinned version.
ADD_ONS = {"cornice": "6.1.0"}

#: Tools an add-on pins for its development, which its tests do not need.
TOOLS = ("pytest", "ruff", "flake8", "black", "isort", "mypy", "coverage", "tox")

#: Seconds one application's suite may take in one mode.
RUN_TIMEOUT = 300


@dataclass(frozen=True)
class App:
    """One application of the corpus: its name and where its tests run."""

    name: str
    directory: Path
    #: The pytest arguments selecting its tests (its own configuration otherwise).
    args: tuple[str, ...] = ()
    #: Whether it has metadata to build (a setup.py or pyproject.toml).
    packaged: bool = True


@dataclass
class Outcome:
    """What one suite did in one mode, test by test."""

    app: str
    mode: str
    #: Test id -> "passed", "failed", "error" or "skipped".
    results: dict[str, str] = field(default_factory=dict)
    #: The end of pytest's output, for a run that produced no report.
    output: str = ""

    def count(self, result: str) -> int:
        return sum(1 for value in self.results.values() if value == result)

    @property
    def passed(self) -> set[str]:
        return {test for test, result in self.results.items() if result == "passed"}


#: Where the session keeps the outcomes, for the table at its end.
OUTCOMES = pytest.StashKey[list[Outcome]]()


def pyramid_version() -> str:
    return importlib.metadata.version("pyramid")


def fetch_sdist(project: str = "pyramid", version: str | None = None) -> Path:
    """The sdist of ``project`` (Pyramid, in its installed version), downloaded once."""
    version = version or pyramid_version()
    archive = CACHE / f"{project}-{version}.tar.gz"
    if not archive.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"{project}=={version}",
                "--dest",
                str(CACHE),
            ],
            check=True,
            timeout=RUN_TIMEOUT,
        )
    return archive


def add_on(project: str, version: str, into: Path) -> tuple[App, list[Requirement]]:
    """One of :data:`ADD_ONS`: its sdist's tests, and what running them needs.

    The add-on itself is installed from the index at that version; its
    tests import it from there.  Of the extras it declares for its own
    development, the libraries its tests use are installed, its pins of
    tools (the test runner, linters) are not: this session's pytest runs
    every suite.
    """
    top = extract(fetch_sdist(project, version), into)
    declared = tomllib.loads((top / "pyproject.toml").read_text())["project"]
    needed = [Requirement(f"{project}=={version}")]
    for extra in declared.get("optional-dependencies", {}).values():
        for line in extra:
            requirement = Requirement(line)
            if not requirement.name.lower().startswith(TOOLS):
                needed.append(requirement)
    return App(f"{project} {version}", top, ("tests",), packaged=False), needed


def extract(archive: Path, into: Path) -> Path:
    """Extract the sdist into ``into``; return its top directory."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (top,) = into.iterdir()
    return top


def discover(sdist: Path) -> list[App]:
    """Every application of the sdist that has tests, and Pyramid's functional tests."""
    apps = [App("pyramid tests/test_integration.py", sdist, ("tests/test_integration.py",), False)]
    directories = [sdist / "docs/narr/myproject"]
    for root in APP_ROOTS:
        directories += sorted(path for path in (sdist / root).iterdir() if path.is_dir())
    for directory in directories:
        packaged = any((directory / name).exists() for name in ("setup.py", "pyproject.toml"))
        if not packaged:
            continue
        # What the tutorials' text runs: ``pytest tests`` (the cookiecutter's
        # layout; some pytest.ini files point elsewhere), or ``pytest
        # tutorial/tests.py`` (the quick tutorial's).
        if (directory / "tests").is_dir():
            args: tuple[str, ...] = ("tests",)
        else:
            args = tuple(
                str(path.relative_to(directory)) for path in sorted(directory.glob("*/tests.py"))
            )
        if args:
            apps.append(App(str(directory.relative_to(sdist / "docs")), directory, args))
    return apps


def build_metadata(app: App) -> list[Requirement]:
    """Write the application's ``egg-info`` beside it; return what it declares it needs."""
    if (app.directory / "setup.py").exists():
        command = [sys.executable, "setup.py", "egg_info"]
    else:
        command = [sys.executable, "-c", "import setuptools; setuptools.setup()", "egg_info"]
    subprocess.run(
        command,
        cwd=app.directory,
        check=True,
        capture_output=True,
        timeout=RUN_TIMEOUT,
    )
    (info,) = app.directory.glob("*.egg-info")
    requires = info / "requires.txt"
    found: list[Requirement] = []
    if requires.exists():
        for line in requires.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("["):
                found.append(Requirement(line))
    return found


def install_missing(requirements: Iterable[Requirement]) -> list[str]:
    """Install what is not installed yet, or not in a version asked for; return it."""
    missing: list[str] = []
    for requirement in requirements:
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(str(requirement))
        else:
            if not requirement.specifier.contains(installed, prereleases=True):
                missing.append(str(requirement))
    missing = sorted(set(missing))
    if missing:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", *missing],
            check=True,
            timeout=RUN_TIMEOUT,
        )
    return missing


def run(app: App, mode: str, reports: Path) -> Outcome:
    """Run ``app``'s own tests in ``mode``; the results, test by test."""
    report = reports / f"{app.name.replace('/', '_').replace(' ', '_')}-{mode}.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        *app.args,
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "-q",
        # Not this repository's options: the application's own configuration rules.
        "--rootdir",
        str(app.directory),
        "--junitxml",
        str(report),
        "-o",
        "junit_family=xunit2",
    ]
    if mode != "stock":
        command.append(f"--aiopyramid-ng={mode}")
    # Not measured by this session's coverage: tracing these suites (the
    # subprocess patch hands its configuration down) would double their time.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "COV_CORE_", "COVERAGE_"))
    }
    env["PYTHONPATH"] = str(app.directory)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    completed = subprocess.run(
        command,
        cwd=app.directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    outcome = Outcome(app.name, mode, output=(completed.stdout + completed.stderr)[-4000:])
    if report.exists():
        outcome.results = parse_junit(report)
    if not outcome.results and completed.returncode != 0:
        # pytest stopped before any test (a conftest that fails to import):
        # one error, so the table shows it.
        outcome.results = {"<conftest>": "error"}
    return outcome


def parse_junit(report: Path) -> dict[str, str]:
    results: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if "error" in kinds:
            results[test] = "error"
        elif "failure" in kinds:
            results[test] = "failed"
        elif "skipped" in kinds:
            results[test] = "skipped"
        else:
            results[test] = "passed"
    return results


def table(outcomes: Iterable[Outcome]) -> str:
    """The corpus table: one line per application and mode."""
    rows: list[tuple[str, ...]] = [("application", "mode", "passed", "failed", "errors", "skipped")]
    for outcome in outcomes:
        rows.append(
            (
                outcome.app,
                outcome.mode,
                *(str(outcome.count(kind)) for kind in ("passed", "failed", "error", "skipped")),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)

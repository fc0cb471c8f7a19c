"""The package's layers hold: no import cycle, and the boundaries the module map states."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO_ROOT

PACKAGE = REPO_ROOT / "aiopyramid_ng"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The modules ``path`` imports at module level (function-level imports are lazy)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # "from . import threadlocal" imports a module, not a name.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {target for target in imports_of(path) if target in modules and target != name}
        for name, path in modules.items()
    }


def test_no_import_cycle() -> None:
    edges = graph()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path[path.index(name) :], name))
        if name in done:
            return
        for target in edges[name]:
            # A package's __init__ imports its submodules; a submodule
            # importing a sibling through the package is not a cycle.
            if not name.startswith(target + "."):
                visit(target, (*path, name))
        done.add(name)

    for name in edges:
        visit(name, ())


def test_asgi_never_imports_compat_nor_the_view_layers() -> None:
    for name, targets in graph().items():
        if name.startswith("aiopyramid_ng.asgi"):
            above = {
                t
                for t in targets
                if t.startswith(("aiopyramid_ng.compat", "aiopyramid_ng.websocket"))
            }
            assert above == set(), (name, above)


def test_the_bridge_imports_nothing_from_pyramid() -> None:
    imported = imports_of(PACKAGE / "bridge.py")
    assert not any(name.split(".")[0] == "pyramid" for name in imported), imported


def test_only_compat_imports_the_libraries_it_adapts() -> None:
    adapted = ("transaction", "sqlalchemy", "pyramid_debugtoolbar", "pyramid_tm")
    for path in PACKAGE.rglob("*.py"):
        if "compat" in path.relative_to(PACKAGE).parts:
            continue
        imported = {name.split(".")[0] for name in imports_of(path)}
        assert imported.isdisjoint(adapted), (path, imported & set(adapted))

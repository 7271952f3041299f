"""The dependency direction, read from the source (`ast`): `ui -> (HTTP) -> serving`, and `serving.core` imports
nothing else of `serving`. Every import counts, also one inside a function and a relative one.

- `ui/` imports nothing from `serving` or `tests` (the studio is deployable on its own);
- `serving/` imports nothing from `ui` or `tests`;
- `serving/core/` imports nothing from `serving` outside `serving.core`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path = ROOT) -> str:
    """`serving/core/images.py` -> `serving.core.images`; a package's `__init__.py` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of everything `module`'s source imports, relative imports made absolute.

    `from a.b import c` gives `a.b.c`: `c` may be a module or a name defined in `a.b`, and either way the import
    reaches into `a.b` (so `from serving import core` is `serving.core`, and `from serving import settings` is not).
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: up `level - 1` packages from this module's own package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, *([base] if base else [])])
            found.extend((node.lineno, f"{base}.{alias.name}" if base else alias.name) for alias in node.names)
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(folder: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = (), root: Path = ROOT) -> list[str]:
    """`path:line imports name` for each import under `root/folder` that is within a `forbidden` package and not
    within an `allowed` one."""
    found = []
    for path in sorted((root / folder).rglob("*.py")):
        module = module_name(path, root)
        for line, name in imported_names(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
            if any(within(name, bad) for bad in forbidden) and not any(within(name, ok) for ok in allowed):
                found.append(f"{path.relative_to(root).as_posix()}:{line} imports {name}")
    return found


def test_the_studio_imports_neither_the_service_nor_the_tests():
    assert violations("ui", ("serving", "tests")) == []


def test_the_service_imports_neither_the_studio_nor_the_tests():
    assert violations("serving", ("ui", "tests")) == []


def test_the_core_imports_nothing_of_the_service_outside_the_core():
    assert violations("serving/core", ("serving",), allowed=("serving.core",)) == []


# --- the checker itself ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "module", "is_package", "expected"),
    [
        ("import serving.settings", "ui.app", False, ["serving.settings"]),
        ("import numpy as np, tests.ui", "ui.app", False, ["numpy", "tests.ui"]),
        ("from serving.settings import get_settings", "ui.state", False, ["serving.settings.get_settings"]),
        ("from serving import core, settings", "serving.core.x", False, ["serving.core", "serving.settings"]),
        ("from serving import *", "serving.core.x", False, ["serving.*"]),
        ("def f():\n    from tests.ui import fake_service", "ui.app", False, ["tests.ui.fake_service"]),
        ("from . import masks", "serving.core.images", False, ["serving.core.masks"]),
        ("from .masks import binarize", "serving.core.images", False, ["serving.core.masks.binarize"]),
        ("from .. import settings", "serving.core.images", False, ["serving.settings"]),
        ("from ..models import sam", "serving.core.images", False, ["serving.models.sam"]),
        ("from . import images", "serving.core", True, ["serving.core.images"]),
        ("from .. import settings", "serving.core", True, ["serving.settings"]),
    ],
)
def test_imports_are_read_absolute(source, module, is_package, expected):
    assert [name for _, name in imported_names(source, module, is_package)] == expected


def test_the_rules_catch_what_they_forbid(tmp_path):
    core = tmp_path / "serving" / "core"
    core.mkdir(parents=True)
    (tmp_path / "serving" / "__init__.py").write_text("")
    (core / "__init__.py").write_text("from . import images\n")
    (core / "images.py").write_text("from . import masks\n\ndef f():\n    from ..settings import Settings\n")
    (tmp_path / "ui").mkdir()
    (tmp_path / "ui" / "state.py").write_text("import streamlit\nfrom serving.settings import get_settings\n")
    assert violations("serving/core", ("serving",), allowed=("serving.core",), root=tmp_path) == [
        "serving/core/images.py:4 imports serving.settings.Settings"
    ]
    assert violations("ui", ("serving", "tests"), root=tmp_path) == [
        "ui/state.py:2 imports serving.settings.get_settings"
    ]
    assert module_name(core / "__init__.py", tmp_path) == "serving.core"

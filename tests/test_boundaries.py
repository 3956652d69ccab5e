"""The layering in DESIGN.md: items and judges know no model, so benchmark/ and scoring/ never import models/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import em_tasks

PACKAGE = Path(em_tasks.__file__).parent


def imported_modules(source: str, package: str) -> set[str]:
    """Every module that source in ``package`` imports, anywhere (lazy imports in functions too), made absolute."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("layer", ["benchmark", "scoring"])
def test_layer_never_imports_the_models(layer: str) -> None:
    offenders = {}
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        modules = imported_modules(path.read_text(encoding="utf-8"), _package(path))
        offenders[str(path.relative_to(PACKAGE))] = sorted(m for m in modules if m.startswith("em_tasks.models"))
    assert {path: modules for path, modules in offenders.items() if modules} == {}


def test_the_check_sees_lazy_and_relative_imports() -> None:
    source = "def f():\n    from ..models import backend\n    import em_tasks.models.lora\n"
    assert {"em_tasks.models.backend", "em_tasks.models.lora"} <= imported_modules(source, "em_tasks.scoring")


def _package(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])

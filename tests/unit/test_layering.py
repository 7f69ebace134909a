"""Data flows one way (docs/architecture.md): sources reach the world, collectors turn
snapshots into metrics, actions change the world, the server only routes. Each layer is
checked against what it must not reach, directly or through any module of ours it imports,
including imports under ``TYPE_CHECKING`` and inside functions; ``app.py`` wires them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "exporter"

# A layer (a package or a module), and the layers it must never import.
FORBIDDEN = {
    "exporter.sources": ("exporter.collectors", "exporter.actions", "exporter.server"),
    "exporter.collectors": ("exporter.actions", "exporter.server"),
    "exporter.actions": ("exporter.collectors", "exporter.server"),
    "exporter.server": ("exporter.actions", "exporter.collectors", "exporter.sources"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(module: str, source: str) -> set[str]:
    """Every module of ours that ``source`` (the text of ``module``) imports, anywhere in it."""
    names: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            origin = ".".join(part for part in (base, node.module or "") if part)
            names.add(origin)  # `from exporter import actions` imports exporter.actions too
            names.update(f"{origin}.{alias.name}" for alias in node.names)
    return {name for name in names if name in MODULES}


def within(name: str, layer: str) -> bool:
    return name == layer or name.startswith(layer + ".")


def reached(start: str) -> dict[str, str]:
    """Every module ``start`` imports directly or through others: module -> who imports it."""
    parents: dict[str, str] = {}
    todo = [start]
    while todo:
        module = todo.pop()
        for name in imported(module, MODULES[module].read_text(encoding="utf-8")):
            if name not in parents and name != start:
                parents[name] = module
                todo.append(name)
    return parents


def chain(parents: dict[str, str], start: str, end: str) -> str:
    steps = [end]
    while steps[-1] != start:
        steps.append(parents[steps[-1]])
    return " -> ".join(reversed(steps))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_none_of_the_layers_above_or_beside_it(layer: str) -> None:
    broken = []
    for module in sorted(m for m in MODULES if within(m, layer)):
        parents = reached(module)
        broken += [chain(parents, module, name) for name in sorted(parents)
                   if any(within(name, other) for other in FORBIDDEN[layer])]
    assert not broken, "imports across the layers:\n" + "\n".join(broken)


def test_imports_are_found_under_type_checking_inside_functions_and_from_packages() -> None:
    source = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from exporter.actions.webhook import Webhooks
def later():
    import exporter.actions.runner
from exporter import actions
from .base import Collector
"""
    assert imported("exporter.collectors.volume", source) == {
        "exporter.actions.webhook", "exporter.actions.runner", "exporter", "exporter.actions",
        "exporter.collectors.base"}

"""Data flows one way (docs/architecture.md). The layers, bottom to top: the shared words
and settings; ``sources`` (reach the world); ``collectors`` and ``actions``, siblings on one
floor that never import each other (one turns snapshots into metrics, the other changes the
world); ``upgrade`` (a feature built on both); the HTTP ``transport``; and the wiring and
entry points on top (``app``, ``server``, ``cli``…). Every module of ``exporter/`` belongs
to one layer and imports only its own layer and those below, checked on every import of
every file: at the top, under ``TYPE_CHECKING`` and inside functions. Within a layer, the
imports point one way too: no two modules import one another, even through others."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "exporter"

# Each layer: its floor (imports go to a lower floor or the same layer) and its members, a
# package (with everything under it) or a module.
LAYERS: dict[str, tuple[int, tuple[str, ...]]] = {
    "base": (0, ("exporter", "exporter.config", "exporter.errors", "exporter.vocabulary",
                 "exporter.readiness", "exporter.inflow", "exporter.offpeak", "exporter.workers",
                 "exporter.logs", "exporter.malloc")),
    "sources": (1, ("exporter.sources",)),
    "collectors": (2, ("exporter.collectors",)),
    "actions": (2, ("exporter.actions",)),
    "upgrade": (3, ("exporter.upgrade",)),
    "transport": (4, ("exporter.transport",)),
    "top": (5, ("exporter.app", "exporter.server", "exporter.cli", "exporter.__main__",
                "exporter.doctor", "exporter.exposition", "exporter.landing",
                "exporter.runbooks", "exporter.webconfig", "exporter.remote_run")),
}
# Narrower still: the transport serves bytes and knows nothing of the exporter; the server
# only routes (the actions' hooks and the collectors' registry are handed to it).
ONLY_BELOW = {"transport": ("base",)}
NEVER = {"exporter.server": ("actions", "collectors", "sources")}


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


def within(name: str, member: str) -> bool:
    """``name`` is ``member``, or under it (``exporter`` itself has nothing under it: the
    package's other modules are in their own layers)."""
    return name == member or (member != "exporter" and name.startswith(member + "."))


def layer_of(module: str) -> str | None:
    found = [layer for layer, (_, members) in LAYERS.items()
             if any(within(module, member) for member in members)]
    return found[0] if len(found) == 1 else None


def allowed(importer: str, imported_module: str) -> bool:
    mine, theirs = layer_of(importer), layer_of(imported_module)
    assert mine is not None and theirs is not None
    if theirs in NEVER.get(importer, ()):
        return False
    if mine in ONLY_BELOW:
        return theirs == mine or theirs in ONLY_BELOW[mine]
    return theirs == mine or LAYERS[theirs][0] < LAYERS[mine][0]


def test_every_module_is_in_exactly_one_layer() -> None:
    assert [m for m in sorted(MODULES) if layer_of(m) is None] == []


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_a_layer_imports_only_itself_and_the_layers_below(layer: str) -> None:
    broken = []
    for module in sorted(m for m in MODULES if layer_of(m) == layer):
        text = MODULES[module].read_text(encoding="utf-8")
        broken += [f"{module} ({layer}) -> {name} ({layer_of(name)})"
                   for name in sorted(imported(module, text)) if not allowed(module, name)]
    assert not broken, "imports up or across the layers:\n" + "\n".join(broken)


@pytest.mark.parametrize(("importer", "imported_module", "ok"), [
    ("exporter.sources.locks", "exporter.collectors.base", False),
    ("exporter.collectors.readiness", "exporter.upgrade.report", False),
    ("exporter.collectors.actions", "exporter.actions.runner", False),
    ("exporter.actions.runner", "exporter.collectors.actions", False),
    ("exporter.upgrade.command", "exporter.app", False),
    ("exporter.actions.gc", "exporter.transport", False),
    ("exporter.transport.listener", "exporter.sources.files", False),
    ("exporter.server", "exporter.actions.webhook", False),
    ("exporter.upgrade.gather", "exporter.actions.audit", True),
    ("exporter.collectors.readiness", "exporter.readiness", True),
    ("exporter.app", "exporter.upgrade.command", True),
    ("exporter.sources.wa_api", "exporter", True),
])
def test_the_rule_itself(importer: str, imported_module: str, ok: bool) -> None:
    assert allowed(importer, imported_module) is ok


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


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module: modules that import one
    another, directly or through others (a module importing itself does not count)."""
    reach: dict[str, set[str]] = {}
    for start in graph:
        seen: set[str] = set()
        todo = [name for name in graph[start] if name != start]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += graph.get(name, ())
        reach[start] = seen
    found = {frozenset({m} | {o for o in reach[m] if m in reach[o]})
             for m in graph if m in reach[m]}
    return sorted(sorted(component) for component in found)


def test_no_modules_import_one_another() -> None:
    graph = {module: imported(module, path.read_text(encoding="utf-8"))
             for module, path in MODULES.items()}
    found = cycles(graph)
    assert not found, "modules that import one another (move what they share into a module " \
        "of its own, or hand it over as a parameter):\n" + "\n".join(map(" ".join, found))


def test_a_cycle_is_found_through_other_modules_and_only_once() -> None:
    graph = {"a": {"b"}, "b": {"c", "b"}, "c": {"a"}, "d": {"a", "d"}, "e": {"f"}, "f": {"e"}}
    assert cycles(graph) == [["a", "b", "c"], ["e", "f"]]


MAX_MODULE_LINES = 450  # a module over it is usually two (STYLE.md: small rooms)


def test_no_module_is_longer_than_a_head_holds() -> None:
    long = {name: n for name, path in sorted(MODULES.items())
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines: {long}"

"""The layout's rules (docs/architecture.md), checked on the source: a forbidden import fails the build.

Every module of our packages is parsed (never imported); each ``import``/``from … import`` is
resolved to the module it names, wherever it stands (top level or inside a function: a lazy
import that dodges a cycle is still a cycle). Imports under ``if TYPE_CHECKING:`` are types
only and are left out of the cycle check, but not out of the layering rules.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("carecall", "config", "device_gateway", "dispatcher", "simulators")
MAX_LINES = 600

# Pure decision modules: no database, network, broker, subprocess or file I/O.
DECISIONS = (
    "dispatcher.calls.priority",
    "dispatcher.calls.routing",
    "dispatcher.calls.escalation",
    "dispatcher.calls.lifecycle",
    "dispatcher.incidents.mass_offline",
    "dispatcher.health.stall",
    "dispatcher.audit.chain",
    "dispatcher.oversight.figures",
    "dispatcher.oversight.review",
    "dispatcher.oversight.coverage",
    "device_gateway.limits",
    "device_gateway.lanes",
    "device_gateway.shedding",
    "carecall.core.geo",
    "dispatcher.paging.policy",
    "dispatcher.family.link",
    "dispatcher.calls.ladder",
    "dispatcher.calls.ranking",
    "dispatcher.notifications.channels.policy",
    "dispatcher.notifications.compose",
    "dispatcher.notifications.channels.order",
    "dispatcher.notifications.area",
    "dispatcher.oversight.workhours",
    "dispatcher.oversight.text",
    "dispatcher.visits.planner",
    "dispatcher.visits.rules",
    "dispatcher.visits.compliance",
    "dispatcher.orders.catalogue",
    "dispatcher.orders.hours",
    "dispatcher.orders.routing",
    "dispatcher.orders.lifecycle",
    "dispatcher.orders.levels",
    "dispatcher.orders.timeline",
    "dispatcher.visits.needs",
    "dispatcher.family.language",
    "dispatcher.registry.reasons",
    "dispatcher.oversight.orders_figures",
    "dispatcher.oversight.visits_figures",
    "carecall.shell.bench_copykill_figures",
    "carecall.shell.bench_verdicts",
)
IO_LIBRARIES = (
    "sqlalchemy",
    "httpx",
    "redis",
    "paho",
    "aiomqtt",
    "amqtt",
    "asyncpg",
    "aiosqlite",
    "subprocess",
    "asyncio.subprocess",
    "socket",
    "shutil",
    "fastapi",
    "config.yamlfile",
    "carecall.core.db",
    "carecall.core.bus",
)
FILE_CALLS = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "unlink", "mkdir", "rmdir"}

# What the device-side simulators may import of ours: the protocol and shared value types.
SIMULATOR_ALLOWED = ("simulators", "device_gateway.protocol", "device_gateway.kinds", "config.types")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (ours only)
    line: int
    typing_only: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts and "versions" in path.parts:
                continue
            yield _module_name(path), path


MODULES: dict[str, Path] = dict(_sources())


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _resolve(name: str) -> str:
    """The longest known module (or package) that ``name`` starts with."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return name


def _typing_blocks(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    for sub in ast.walk(child):
                        if hasattr(sub, "lineno"):
                            lines.add(sub.lineno)
    return lines


def _imports(module: str, path: Path) -> tuple[list[Import], list[str], list[tuple[str, int]]]:
    """(imports of ours, every imported top name incl. third party, file-I/O calls)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_lines = _typing_blocks(tree)
    ours: list[Import] = []
    external: list[str] = []
    file_calls: list[tuple[str, int]] = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import submodule` names the submodule
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called in FILE_CALLS:
                file_calls.append((called, node.lineno))
            continue
        else:
            continue
        for name in names:
            external.append(name)
            if _ours(name):
                target = _resolve(name)
                if target != module:
                    ours.append(Import(module, target, node.lineno, node.lineno in typing_lines))
    return ours, external, file_calls


GRAPH: dict[str, list[Import]] = {}
EXTERNAL: dict[str, list[str]] = {}
FILE_IO: dict[str, list[tuple[str, int]]] = {}
for _name, _path in MODULES.items():
    GRAPH[_name], EXTERNAL[_name], FILE_IO[_name] = _imports(_name, _path)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _violations(sources: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{i.source}:{i.line} imports {i.target}"
        for module, imports in GRAPH.items()
        if _within(module, sources)
        for i in imports
        if any(_within(i.target, f) for f in forbidden)
    ]


def test_the_device_edge_knows_nothing_downstream() -> None:
    assert _violations("device_gateway", ("dispatcher", "simulators", "carecall.shell")) == []


def test_the_foundation_imports_no_domain() -> None:
    assert _violations("carecall.core", ("dispatcher", "device_gateway", "simulators", "carecall.shell")) == []


def test_config_imports_nothing_of_ours_but_config() -> None:
    assert _violations("config", ("carecall", "dispatcher", "device_gateway", "simulators")) == []


def test_nothing_imports_the_shell_but_the_shell() -> None:
    found = [
        f"{i.source}:{i.line} imports {i.target}"
        for module, imports in GRAPH.items()
        if not _within(module, "carecall.shell")
        for i in imports
        if _within(i.target, "carecall.shell")
    ]
    assert found == []


def test_a_simulated_device_imports_only_the_protocol() -> None:
    found = [
        f"{i.source}:{i.line} imports {i.target}"
        for module, imports in GRAPH.items()
        if _within(module, "simulators")
        for i in imports
        if not any(_within(i.target, allowed) for allowed in SIMULATOR_ALLOWED)
    ]
    assert found == []


def test_the_protocol_imports_nothing_but_itself() -> None:
    protocol = [m for m in MODULES if _within(m, "device_gateway.protocol") or m == "device_gateway.kinds"]
    assert protocol, "the protocol modules moved: update SIMULATOR_ALLOWED and this test"
    found = [
        f"{i.source}:{i.line} imports {i.target}"
        for module in protocol
        for i in GRAPH[module]
        if not (_within(i.target, "device_gateway.protocol") or i.target in ("device_gateway.kinds", "config.types"))
    ]
    assert found == []


@pytest.mark.parametrize("module", DECISIONS)
def test_a_decision_module_does_no_io(module: str) -> None:
    assert module in MODULES, f"{module} is listed as a decision module but does not exist"
    libs = [n for n in EXTERNAL[module] if any(_within(n, lib) for lib in IO_LIBRARIES)]
    assert libs == [], f"{module} imports I/O: {libs}"
    assert FILE_IO[module] == [], f"{module} does file I/O: {FILE_IO[module]}"


def _package_of(module: str) -> str:
    """The room a module belongs to: a domain of dispatcher, a part of carecall, or a top package."""
    parts = module.split(".")
    if parts[0] in ("dispatcher", "carecall") and len(parts) > 1:
        candidate = ".".join(parts[:2])
        if (ROOT / parts[0] / parts[1]).is_dir():
            return candidate
        return parts[0]
    return parts[0]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _edges(key: object) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imports in GRAPH.values():
        for i in imports:
            if i.typing_only:
                continue
            a, b = key(i.source), key(i.target)  # type: ignore[operator]
            if a != b:
                edges.setdefault(a, set()).add(b)
    return edges


def _witness(members: list[str], key: object) -> list[str]:
    return sorted(
        f"{i.source}:{i.line} -> {i.target}"
        for imports in GRAPH.values()
        for i in imports
        if not i.typing_only
        and key(i.source) in members  # type: ignore[operator]
        and key(i.target) in members  # type: ignore[operator]
        and key(i.source) != key(i.target)  # type: ignore[operator]
    )


def test_no_package_cycle() -> None:
    cycles = _cycles(_edges(_package_of))
    assert cycles == [], [(c, _witness(c, _package_of)) for c in cycles]


def test_no_module_cycle() -> None:
    def same(module: str) -> str:
        # a package's __init__ and its modules count apart
        return module

    cycles = _cycles(_edges(same))
    assert cycles == [], [(c, _witness(c, same)) for c in cycles]


def test_no_source_module_over_600_lines() -> None:
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_rules_see_every_package() -> None:
    """The checks above would pass vacuously if the parser found nothing."""
    assert len(MODULES) > 80
    dispatcher_imports = [i for m in MODULES if _within(m, "dispatcher") for i in GRAPH[m]]
    assert any(_within(i.target, "device_gateway") for i in dispatcher_imports)

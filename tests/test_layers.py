"""Who may import whom (../shared/ARCHITECTURE.md, docs/architecture.md), checked on the code:
every import statement of every module, at the top or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("domain", "codec", "commands", "read", "projections", "streams", "api", "bench", "migrations")
# The policies: the only modules of streams/ that issue commands.
POLICIES = {"streams.repricing", "streams.repricing_worker", "streams.parked",
            "streams.etsy_grant", "streams.etsy_push", "streams.etsy_sync", "streams.competitor_watch",
            "streams.rollback_guard"}  # the Etsy push and sync record outcomes, the watches observations

MAY_IMPORT = {
    "domain": {"domain"},
    "codec": {"codec", "domain"},
    "commands": {"commands", "domain", "codec"},
    "projections": {"projections", "domain", "codec"},
    "read": {"read", "domain", "codec", "projections"},
    "streams": {"streams", "domain", "codec", "projections"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, set[str]]:
    """Each of our modules -> the modules of ours it imports."""
    found = {}
    for package in OURS:
        for path in (ROOT / package).rglob("*.py"):
            imported = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    imported |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
            found[module_name(path)] = {name for name in imported if name.split(".")[0] in OURS}
    return found


MODULES = modules()


def reached(start: str) -> set[str]:
    """Every module of ours that importing `start` imports, transitively."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        for imported in MODULES.get(name, ()):
            if imported in MODULES and imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.split(".")[0] in MAY_IMPORT))
def test_each_module_imports_only_what_its_layer_may(module):
    package = module.split(".")[0]
    allowed = MAY_IMPORT[package] | ({"commands"} if module in POLICIES else set())
    wrong = sorted(name for name in MODULES[module] if name.split(".")[0] not in allowed)
    assert not wrong, f"{module} imports {wrong}; {package}/ may import only {sorted(allowed)}"


@pytest.mark.parametrize("module", ["streams.relay", "streams.sink", "streams.workers", "projections.projector",
                                    "read.side", "read.explain", "read.dry_run"])
def test_followers_and_readers_never_reach_the_write_side(module):
    assert not sorted(m for m in reached(module) if m.startswith("commands")), f"{module} reaches commands/"


def test_nothing_below_the_api_imports_it():
    wrong = sorted(m for m, imported in MODULES.items()
                   if m.split(".")[0] not in ("api", "bench") and any(i.split(".")[0] == "api" for i in imported))
    assert not wrong, wrong


def test_the_check_sees_the_imports_it_judges():
    assert "commands.rules" in MODULES["streams.repricing"] and "codec" in MODULES["read.aggregates"]

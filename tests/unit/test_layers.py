"""The house: each layer package imports only the layers below it (docs/architecture.md).

Read from the source with `ast`, function-level imports included (the lazy ones are imports
too), so a new upward arrow fails here before a reader has to find it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "shimctl"

BASE = {"errors", "faults", "lazy", "__init__"}
# What each layer may import besides itself and BASE.
ALLOWED: dict[str, set[str]] = {
    "cli": {"output", "ops", "reconcile", "steps", "records", "node", "shim", "models", "settings"},
    "output": {"models"},
    "ops": {"reconcile", "steps", "records", "node", "shim", "models", "settings"},
    "reconcile": {"steps", "records", "node", "shim", "models", "settings"},
    "steps": {"node", "shim", "models", "settings"},
    "records": {"node", "shim", "models"},
    "settings": {"shim"},
    "node": {"shim", "models"},
    "shim": set(),
    "models": set(),
    "errors": set(),
    "faults": set(),
    "lazy": set(),
    "__main__": {"cli"},
    "__init__": set(),
}


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imported_layers(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "shimctl":
                names = [f"shimctl.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "shimctl" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] == "tools":
                found.add("tools")
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "proto" not in p.relative_to(PACKAGE).parts)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downward(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED, f"{layer}: a new layer? add it to ALLOWED and the architecture doc"
    wrong = _imported_layers(path) - ALLOWED[layer] - BASE - {layer, "__version__"}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(wrong)}"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from shimctl.ops import start\n    import shimctl.cli.app\n")
    assert _imported_layers(source) == {"ops", "cli"}

"""The web package's modules import only downward: each one only from those listed before it here, so the
package has no import cycle and no lazy import to hide one."""

from __future__ import annotations

import ast
from pathlib import Path

WEB = Path(__file__).resolve().parents[1] / "pgqd" / "web"

# Lowest first. A new module takes its place here by what it needs.
LAYERS = [
    "settings",
    "security",
    "present",
    "chart",
    "history_chart",
    "pool",
    "state",
    "rendering",
    "params",
    "forms",
    "guard",
    "filters",
    "estimates",
    "bulk",
    "views_seek",
    "workflow_pages",
    "pages",
    "views_history",
    "views_running",
    "actions",
    "factory",
]


def web_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "pgqd.web":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("pgqd.web."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith("pgqd.web."))
    return found


def test_every_web_module_has_a_layer() -> None:
    modules = {p.stem for p in WEB.glob("*.py")} - {"__init__"}
    assert modules == set(LAYERS), f"add to LAYERS or remove: {sorted(modules ^ set(LAYERS))}"


def test_web_modules_import_only_from_layers_below_them() -> None:
    upward = []
    for module in LAYERS:
        below = set(LAYERS[: LAYERS.index(module)])
        for imported in web_imports(WEB / f"{module}.py") - below:
            upward.append(f"pgqd.web.{module} imports pgqd.web.{imported}")
    assert not upward, upward

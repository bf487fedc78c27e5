"""Dependencies point from the daemon to the engine to the storage port, never back: a producer's ``import pgqd``
loads nothing of the daemon, the CLI or the web UI, and no library module imports the daemon or the CLI."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pgqd"
# The processes' own code: the supervisor and worker processes, and the commands that start them.
TOP = ("daemon", "cli")


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_import_pgqd_loads_nothing_of_the_daemon_the_cli_or_the_web_ui() -> None:
    probe = (
        "import sys, pgqd; print(sorted(m for m in sys.modules if m.split('.')[1:2] in (['daemon'], ['cli'], ['web'])))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == "[]"


def test_no_library_module_imports_the_daemon_or_the_cli() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = path.relative_to(PACKAGE).parts[0]
        if part in TOP:
            continue
        for module in imported_modules(path):
            if any(module == f"pgqd.{top}" or module.startswith(f"pgqd.{top}.") for top in TOP):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert wrong == []


# What the lower layers may import of pgqd: the SQL text knows an install's names and the value types, nothing
# that runs it; the storage port and the engine know nothing of the producer API or its driver adapters, the read
# side or the web UI.
LOWER_LAYERS = {
    "sql": ("pgqd.sql", "pgqd.identifiers", "pgqd.models", "pgqd.errors"),
    "backend": ("pgqd.backend", "pgqd.sql", "pgqd.identifiers", "pgqd.models", "pgqd.errors", "pgqd.backoff",
                "pgqd.units"),
}  # fmt: skip
ABOVE_THE_ENGINE = ("pgqd.client", "pgqd.sync_client", "pgqd.ops", "pgqd.web", "pgqd.contrib")


def _within(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in allowed)


def test_the_sql_text_and_the_storage_port_import_only_what_lies_below_them() -> None:
    wrong = []
    for layer, allowed in LOWER_LAYERS.items():
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            for module in imported_modules(path):
                if module.startswith("pgqd") and not _within(module, allowed):
                    wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert wrong == []


def test_the_engine_imports_nothing_of_the_producer_api_the_read_side_or_the_web_ui() -> None:
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in sorted((PACKAGE / "worker").rglob("*.py"))
        for module in imported_modules(path)
        if _within(module, ABOVE_THE_ENGINE)
    ]
    assert wrong == []


def test_the_module_map_names_every_module_and_only_paths_that_exist() -> None:
    """docs/architecture.md's module map: a module is named by its path, or by its file name or bare name in a
    row that names its folder."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = [line for line in doc[doc.index("## Module map") :].splitlines() if line.startswith("|")]
    unnamed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent)
        folder = f"{relative.parent}/"
        if path.name == "__init__.py" or any(
            str(relative) in row or (folder in row and (f"`{path.name}`" in row or f"`{path.stem}`" in row))
            for row in rows
        ):
            continue
        unnamed.append(str(relative))
    assert unnamed == []
    named = set(re.findall(r"`((?:pgqd|tests|docs)/[\w/.-]+)`", doc))
    assert sorted(p for p in named if not (PACKAGE.parent / p).exists()) == []


def test_the_web_uis_modules_import_only_those_the_module_map_lists_before_them() -> None:
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `pgqd/web/` |"))
    modules = {path.stem for path in (PACKAGE / "web").glob("*.py")} - {"__init__"}
    listed = [name for name in re.findall(r"`(\w+)`", row) if name in modules]
    assert sorted(listed) == sorted(modules)
    place = {name: index for index, name in enumerate(listed)}
    later = []
    for name in listed:
        for imported in web_modules_imported(PACKAGE / "web" / f"{name}.py"):
            if place[imported] > place[name]:
                later.append(f"{name} imports {imported}")
    assert later == []


def web_modules_imported(path: Path) -> set[str]:
    """The modules of pgqd/web that ``path`` imports (``from pgqd.web.x import ...``, ``from pgqd.web import x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "pgqd.web":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pgqd.web."):
            found.add(node.module.split(".")[2])
    return found

"""Dependencies point from the daemon to the engine to the storage port, never back: a producer's ``import pgqd``
loads nothing of the daemon, the CLI or the web UI, and no library module imports the daemon or the CLI."""

from __future__ import annotations

import ast
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

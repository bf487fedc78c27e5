"""SQL text of pgqd: numbered migrations, the uninstall script, and the statements of the hot path."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from pgqd.identifiers import Names

_MIGRATION_FILE = re.compile(r"(\d{4})_(\w+)\.sql")
# Splits a migration into steps committed one after the other: PostgreSQL lets some changes (a new enum value)
# be used only once committed. Every step but the last must be safe to run again (IF NOT EXISTS).
_COMMIT_MARKER = re.compile(r"^-- pgqd: commit$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def steps(self) -> list[str]:
        return [step for step in _COMMIT_MARKER.split(self.sql) if step.strip()]


def render(template: str, names: Names) -> str:
    """Fills the ``{jobs}``-style placeholders of a template with this install's quoted names."""
    return template.format_map(names.template_values())


def migrations(names: Names) -> list[Migration]:
    """Every migration shipped with this version of pgqd, in the order they must be applied."""
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], render(entry.read_text("utf-8"), names)))
    found.sort(key=lambda m: m.version)
    expected = list(range(1, len(found) + 1))
    if [m.version for m in found] != expected:
        raise RuntimeError(f"pgqd migrations are not numbered 1..{len(found)} without gaps")
    return found


def latest_version() -> int:
    return len(migrations(Names()))


def uninstall_sql(names: Names) -> str:
    return render(resources.files(__package__).joinpath("uninstall.sql").read_text("utf-8"), names)

"""Reading the deployment artefacts the way their tools do: systemd units, Dockerfiles, PromQL in Grafana
dashboards and Prometheus rules, Kubernetes manifests. Also where the external tools that check them are."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "systemd"
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def missing(what: str) -> None:
    """In CI a missing tool fails the test; elsewhere it skips, saying how to get it."""
    message = f"{what} is not available: scripts/install-test-tools.sh installs it (as root)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def require_tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        missing(name)
    assert found is not None
    return found


# --- systemd ------------------------------------------------------------------------------------------------
Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections of a unit file, each key with every value it was given (keys like SystemCallFilter repeat)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"directive outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a directive: {line}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def one(unit: Unit, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}: expected one value, found {values}"
    return values[0]


_SYSTEMD_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}


def systemd_seconds(value: str) -> float:
    """A systemd time span ("60s", "5min", "1min 30s", "90") in seconds."""
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts, f"not a time span: {value!r}"
    assert "".join(n + u for n, u in parts) == value.replace(" ", ""), f"not a time span: {value!r}"
    for number, unit in parts:
        total += float(number) * _SYSTEMD_UNITS[unit or "s"]
    return total


# --- PromQL ---------------------------------------------------------------------------------------------------
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """The pgqd metric names an expression selects: identifiers starting with pgqd_, outside string literals
    (label values such as outcome="..." are strings, and label names never start with pgqd_)."""
    code = _STRING.sub('""', expr)
    return {name for name in _IDENTIFIER.findall(code) if name.startswith("pgqd_")}


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL text in a Grafana dashboard: panel targets (rows' nested panels too) and variable queries."""
    found: list[str] = []

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        found += [target["expr"] for target in panel.get("targets", []) if target.get("expr")]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        found.append(query["query"] if isinstance(query, dict) else str(query))
    return found


def rule_expressions(rules: dict[str, Any]) -> dict[str, str]:
    """Alert or record name → expression, over every group of a Prometheus rules file."""
    return {
        rule.get("alert") or rule["record"]: str(rule["expr"]) for group in rules["groups"] for rule in group["rules"]
    }


def scraped_sample_names(text: str) -> set[str]:
    """The sample names in a Prometheus text exposition (pgqd_job_duration_seconds_bucket, ..._sum, ...)."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = _IDENTIFIER.match(line)
            if match:
                names.add(match.group())
    return names


def load_dashboard(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


# --- Dockerfile ------------------------------------------------------------------------------------------------
@dataclass
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ENTRYPOINT/CMD/RUN, or None for the shell form."""
        try:
            parsed = json.loads(self.arguments)
        except ValueError:
            return None
        if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
            return parsed
        return None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: comments dropped, backslash continuations joined, one FROM per stage."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        arguments = arguments.strip()
        if keyword == "FROM":
            words = arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif keyword == "ARG" and not stages:
            continue  # a build argument for FROM lines
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, arguments))
    return stages


def copy_sources(instruction: Instruction) -> list[str]:
    """The build-context sources of a COPY (none for COPY --from=stage)."""
    words = instruction.arguments.split()
    if any(word.startswith("--from=") for word in words):
        return []
    paths = [word for word in words if not word.startswith("--")]
    return paths[:-1]


# --- Kubernetes ------------------------------------------------------------------------------------------------
def kubernetes_documents() -> list[tuple[Path, dict[str, Any]]]:
    """Every YAML document under deploy/kubernetes, with its file."""
    import yaml

    found = []
    for path in sorted(KUBERNETES.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path, document))
    return found


def by_kind(kind: str) -> dict[str, Any]:
    matches = [doc for _, doc in kubernetes_documents() if doc.get("kind") == kind]
    assert len(matches) == 1, f"expected one {kind} under deploy/kubernetes, found {len(matches)}"
    return matches[0]

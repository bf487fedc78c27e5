"""The reference backends' own test suites, run against PgqdTaskBackend with the real daemon running the tasks:
Django's tests/tasks (from the Django 6.0 sdist) and django-tasks-db's tests (from its sdist), on Django 5.2 with
the django-tasks backport (this virtualenv) and on Django 6.0 (a virtualenv of its own, made by
scripts/django6-venv). The suites are downloaded with ``pip download`` at test time into .pgqd/reference, never
kept in the repository. tests/reference/pgqd_reference adapts the backend set-up and the "run the worker" step,
and lists what is skipped and why; every test that runs must pass. Each run's outcomes are written to
.pgqd/reference/results-<django>-<suite>.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

from tests.support.cli import run_pgqd
from tests.support.daemon import REPO, Daemon

# --python-version: Django 6 needs Python 3.12, and only its test files are used here.
PIP_DOWNLOAD = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
PIP_DOWNLOAD += ["--python-version", "3.12"]
CACHE = REPO / ".pgqd" / "reference"
ADAPTER = REPO / "tests" / "reference"
DJANGO_SDIST = "Django>=6.0,<6.1"  # the first Django with django.tasks, and so with tests/tasks
TASKS_DB_SDIST = "django-tasks-db"

DAEMON = """
[workers]
processes = 1
concurrency = 8
poll_interval = "1s"
shutdown_timeout = "2s"

[metrics]
enabled = false

[logging]
level = "info"
format = "json"

[django]
settings = "pgqd_reference.settings"

[django.queues.default]
retry = { max_attempts = 1 }

[django.queues.queue_1]
retry = { max_attempts = 1 }

[django.queues.queue-1]
retry = { max_attempts = 1 }
"""


def sdist(requirement: str) -> Path:
    """The source distribution of ``requirement``, downloaded once into the cache."""
    folder = CACHE / "sdists" / requirement.replace(">", "").replace("<", "-").replace("=", "").replace(",", "")
    found = sorted(folder.glob("*.tar.gz"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [*PIP_DOWNLOAD, "--dest", str(folder), requirement],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        found = sorted(folder.glob("*.tar.gz"))
    assert len(found) == 1, found
    return found[0]


def extract(archive: Path, inside: str, to: Path) -> None:
    """Copies folder ``inside`` (relative to the archive's top folder) of an sdist to ``to``."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.split("/", 1)[-1].startswith(inside + "/")]
        assert members, f"{archive.name} has no {inside}/"
        for member in members:
            target = to / member.name.split("/", 1)[1].removeprefix(inside + "/")
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())


def workspace(suite: str, where: Path) -> Path:
    """A folder holding the suite as its runner and the daemon import it."""
    if suite == "django":
        extract(sdist(DJANGO_SDIST), "tests/tasks", where / "tasks")
    else:
        archive = sdist(TASKS_DB_SDIST)
        extract(archive, "django_tasks_db", where / "django_tasks_db")
        # Its metadata too: the package asks for its own version.
        extract(archive, "django_tasks_db.egg-info", where / "django_tasks_db.egg-info")
        extract(archive, "tests", where / "tests")
        (where / "tests" / "__init__.py").touch()
        shutil.copy(ADAPTER / "pgqd_reference" / "suite_tasks.py", where / "tests" / "tasks.py")
    return where


@pytest.fixture(scope="session")
def django6_python() -> str:
    done = subprocess.run(
        [str(REPO / "scripts" / "django6-venv")], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode == 3:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def python_for(version: str, request: pytest.FixtureRequest) -> str:
    if version == "5.2":
        import django

        assert django.VERSION[:2] == (5, 2), "this virtualenv is meant to have Django 5.2 and the backport"
        return sys.executable
    python: str = request.getfixturevalue("django6_python")
    return python


class SuiteDaemon(Daemon):
    """The daemon of the Django version under test, importing the suite from its folder."""

    def __init__(self, python: str, folder: Path, config: Path, dsn: str, env: dict[str, str]) -> None:
        super().__init__(config, dsn, env)
        self.pgqd = str(Path(python).with_name("pgqd"))
        self.cwd = folder

    def command(self) -> list[str]:
        return [self.pgqd, "--config", str(self.config_path)]


def summary(outcomes: dict[str, str]) -> dict[str, int]:
    counted = Counter(outcomes.values())
    return {kind: counted.get(kind, 0) for kind in ("passed", "skipped", "failed", "error")}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("suite", ["django", "tasks_db"])
@pytest.mark.parametrize("version", ["5.2", "6.0"])
def test_the_reference_suite_passes_against_pgqd(
    version: str, suite: str, db_dsn: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    python = python_for(version, request)
    folder = workspace(suite, tmp_path / "suite")
    installed = run_pgqd("install", "--prefix", "pgqd_idle_", env={"PGQD_DSN": db_dsn})
    assert installed.returncode == 0, installed.stderr
    env = {
        "PYTHONPATH": str(ADAPTER),
        "PGQD_REFERENCE_DSN": db_dsn,
        "PGQD_REFERENCE_SUITE": suite,
        "DJANGO_SETTINGS_MODULE": "pgqd_reference.settings",
    }
    config = tmp_path / "queue.toml"
    config.write_text(DAEMON)
    daemon = SuiteDaemon(python, folder, config, db_dsn, env).start()
    try:
        daemon.wait_ready()
        out = tmp_path / "outcomes.json"
        ran = subprocess.run(
            [python, "-m", "pgqd_reference.runner", suite, str(out)],
            cwd=folder,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        daemon.stop()
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-5000:]
    result: dict[str, Any] = json.loads(out.read_text())
    counts = summary(result["outcomes"])
    CACHE.mkdir(parents=True, exist_ok=True)
    report = {**counts, "django": result["django"], "python": result["python"], "outcomes": result["outcomes"]}
    report["skipped_because"] = {t: d for t, d in result["details"].items() if result["outcomes"][t] == "skipped"}
    (CACHE / f"results-{version}-{suite}.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    print(f"{suite} suite on Django {result['django']} (Python {result['python']}): {counts}")
    broken = {t: result["details"][t] for t, kind in result["outcomes"].items() if kind in ("failed", "error")}
    assert not broken, "\n\n".join(f"{t}:\n{d}" for t, d in broken.items()) + "\n\n" + daemon.log_text()[-3000:]
    assert counts["passed"] > 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_django_integration_tests_pass_on_django_6(django6_python: str) -> None:
    """tests/test_django.py, whose project and daemon run on this virtualenv's Django 5.2, run again on Django 6."""
    ran = subprocess.run(
        [str(Path(django6_python).with_name("pytest")), "tests/test_django.py", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=800,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout[-5000:] + ran.stderr[-3000:]
    assert " passed" in ran.stdout, ran.stdout[-2000:]
    assert " skipped" not in ran.stdout, ran.stdout[-2000:]

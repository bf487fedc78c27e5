"""Runs one reference suite in this process against PgqdTaskBackend and writes what happened as JSON.

    python -m pgqd_reference.runner {django|tasks_db} OUT.json

Run from the folder holding the suite (``tasks/`` of Django's tests, or django-tasks-db's ``tests/``), with a
pgqd daemon serving the database in $PGQD_REFERENCE_DSN and the same settings (pgqd_reference.settings).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import unittest
from collections.abc import Iterator
from typing import Any

SUITES = {"django": "tasks", "tasks_db": "tests.tests"}


def substitute_backends(suite: str) -> None:
    """The backend set-up: the reference backends' import paths lead to the adapters."""
    from pgqd_reference import backends

    if suite == "django":
        dummy = importlib.import_module("django.tasks.backends.dummy")
        immediate = importlib.import_module("django.tasks.backends.immediate")
        dummy.DummyBackend = backends.DummyAdapter  # type: ignore[attr-defined]
        immediate.ImmediateBackend = backends.ImmediateAdapter  # type: ignore[attr-defined]
    else:
        import django_tasks_db
        import django_tasks_db.backend

        django_tasks_db.DatabaseBackend = backends.DatabaseAdapter  # type: ignore[attr-defined]
        django_tasks_db.backend.DatabaseBackend = backends.DatabaseAdapter  # type: ignore[attr-defined]


def tests_of(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from tests_of(item)
        else:
            yield item


class Outcomes(unittest.TestResult):
    def __init__(self) -> None:
        super().__init__()
        self.outcome: dict[str, str] = {}
        self.details: dict[str, str] = {}
        self.started = 0.0

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        self.outcome.setdefault(test.id(), "passed")
        self.started = time.monotonic()
        print(test.id(), end=" ... ", flush=True)

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        print(f"{self.outcome[test.id()]} ({time.monotonic() - self.started:.2f}s)", flush=True)

    def _bad(self, test: Any, kind: str, err: Any) -> None:
        test_id = test.id() if not hasattr(test, "test_case") else test.test_case.id()
        self.outcome[test_id] = kind
        self.details[test_id] = self.details.get(test_id, "") + "".join(traceback.format_exception(*err))

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._bad(test, "failed", err)

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        self._bad(test, "error", err)

    def addSubTest(self, test: unittest.TestCase, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "failed" if issubclass(err[0], test.failureException) else "error"
            self._bad(test, kind, err)

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self.outcome[test.id()] = "skipped"
        self.details[test.id()] = reason

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self.outcome[test.id()] = "passed"


def main(suite: str, out: str) -> int:
    os.environ["DJANGO_SETTINGS_MODULE"] = "pgqd_reference.settings"
    os.environ["PGQD_REFERENCE_SUITE"] = suite
    os.environ["PGQD_REFERENCE_ROLE"] = "suite"
    # The suites' async tests also call the synchronous API (get_result, refresh, DummyBackend.results), which
    # the in-memory reference backends serve without the database; a database backend needs Django to allow it.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    sys.path.insert(0, os.getcwd())
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import SimpleTestCase
    from django.test.utils import setup_test_environment
    from pgqd_reference.skips import skip_reason

    setup_test_environment()
    call_command("migrate", verbosity=0)
    # The backend set-up: PgqdTaskBackend keeps tasks in the database, which SimpleTestCase walls off.
    SimpleTestCase.databases = {"default"}
    substitute_backends(suite)

    loader = unittest.TestLoader()
    if suite == "django":
        loaded = loader.discover("tasks", pattern="test*.py", top_level_dir=".")
    else:
        loaded = loader.loadTestsFromName(SUITES[suite])
    if suite == "tasks_db":
        from pgqd_reference import backends

        worker_tests = importlib.import_module("tests.tests").DatabaseBackendWorkerTestCase
        worker_tests.run_worker = staticmethod(backends.run_worker)
        backends.pause_the_worker()
    runnable = unittest.TestSuite()
    for test in tests_of(loaded):
        if isinstance(test, unittest.loader._FailedTest):  # type: ignore[attr-defined]
            runnable.addTest(test)  # an import error of the suite shows as an error
            continue
        method = getattr(test, test._testMethodName)
        reason = skip_reason(test.id(), method, on_backport=django.VERSION < (6,))
        if reason is not None:
            setattr(test, test._testMethodName, unittest.skip(reason)(method))
        runnable.addTest(test)
    outcomes = Outcomes()
    runnable.run(outcomes)
    summary = {
        "django": django.get_version(),
        "python": sys.version.split()[0],
        "outcomes": outcomes.outcome,
        "details": outcomes.details,
    }
    with open(out, "w") as file:
        json.dump(summary, file, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

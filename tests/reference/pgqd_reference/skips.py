"""What the reference suites test that is not PgqdTaskBackend's to pass, and why. Everything else runs."""

from __future__ import annotations

import inspect
from collections.abc import Callable

# Whole files or classes.
SKIPPED_MODULES = {
    "tasks.test_custom_backend": "tests subclassing BaseTaskBackend with backends of its own; none of ours is used",
}
SKIPPED_CLASSES = {
    "DatabaseTaskResultTestCase": "locks rows of django-tasks-db's own model (DBTaskResult)",
    "ConnectionExclusiveTranscationTestCase": "tests a helper of django-tasks-db (exclusive_transaction)",
    "DatabaseBackendPruneTaskResultsTestCase": "tests django-tasks-db's prune_db_task_results command",
    "DatabaseWorkerProcessTestCase": "starts django-tasks-db's db_worker process and signals it; pgqd's daemon "
    "has process tests of its own (tests/test_daemon.py, test_supervisor.py)",
    "CompatTestCase": "tests django-tasks-db's compatibility module",
    "DBTaskResultOrderingTestCase": "tests the ordering of django-tasks-db's own model",
    "AdminTestCase": "tests django-tasks-db's admin pages",
}

# django-tasks-db's tests whose source uses these belong to that implementation, not to the backend API.
SOURCE_MARKERS = [
    ("DBTaskResult", "reads or writes django-tasks-db's own model (DBTaskResult)"),
    ("call_command", "runs django-tasks-db's management commands and their options"),
    ("execute_from_command_line", "runs django-tasks-db's management commands and their options"),
    ("id_function", "tests django-tasks-db's id_function option"),
    ("stdout=stdout", "reads the output of django-tasks-db's db_worker command"),
    ("assertNumQueries", "counts the SQL queries of the reference implementation"),
    ("uuid.UUID(result.id)", "expects UUID result ids; pgqd's are job numbers"),
    ("get_date_max", "tests a helper of django-tasks-db"),
]

# Single tests: what the reference backend does that pgqd does on purpose otherwise.
_IMMEDIATE_RUNS_IN_PROCESS = (
    "asserts log records or exceptions of the task's run in the test process; with pgqd the task runs in the "
    "daemon's worker process, which logs there"
)
_SUPPORTS_GET_RESULT = "asserts that the backend cannot get results; PgqdTaskBackend can (supports_get_result)"
_SUPPORTS_RUN_AFTER = "asserts that the backend refuses run_after; PgqdTaskBackend supports it (supports_defer)"
_TRANSACTIONAL = (
    "asserts that an enqueue inside transaction.atomic() runs at once; pgqd enqueues in the caller's transaction, "
    "so the task runs after the commit (tests/test_django.py checks that)"
)
_IN_MEMORY_RESULTS = (
    "changes DummyBackend's in-memory result objects and expects refresh() to see it; pgqd's results are read "
    "from the database"
)
SKIPPED_TESTS = {
    "DummyBackendTestCase.test_refresh_result": _IN_MEMORY_RESULTS,
    "DummyBackendTestCase.test_refresh_result_async": _IN_MEMORY_RESULTS,
    "TaskTestCase.test_task_error_invalid_exception": _IMMEDIATE_RUNS_IN_PROCESS,
    "TaskTestCase.test_task_error_unknown_module": _IMMEDIATE_RUNS_IN_PROCESS,
    "ImmediateBackendTestCase.test_catches_exception": _IMMEDIATE_RUNS_IN_PROCESS,
    "ImmediateBackendTestCase.test_throws_keyboard_interrupt": _IMMEDIATE_RUNS_IN_PROCESS,
    "ImmediateBackendTestCase.test_complex_exception": _IMMEDIATE_RUNS_IN_PROCESS,
    "ImmediateBackendTestCase.test_complex_return_value": _IMMEDIATE_RUNS_IN_PROCESS,
    "ImmediateBackendTestCase.test_enqueue_logs": _IMMEDIATE_RUNS_IN_PROCESS,
    "ImmediateBackendTestCase.test_failed_logs": _IMMEDIATE_RUNS_IN_PROCESS,
    "ImmediateBackendTestCase.test_successful_task_no_none_in_logs": _IMMEDIATE_RUNS_IN_PROCESS,
    "ImmediateBackendTestCase.test_cannot_get_result": _SUPPORTS_GET_RESULT,
    "ImmediateBackendTestCase.test_cannot_refresh_result": _SUPPORTS_GET_RESULT,
    "ImmediateBackendTestCase.test_cannot_pass_run_after": _SUPPORTS_RUN_AFTER,
    "ImmediateBackendTransactionTestCase.test_doesnt_wait_until_transaction_commit_by_default": _TRANSACTIONAL,
    "DatabaseBackendTestCase.test_database_backend_app_missing": "tests django-tasks-db's system check for its own app",
}


# On Django 5.2 only: Django 6.0's tests run on the backport, whose wording differs here and there.
_WORDING = "asserts Django 6.0's wording of an error raised by the backport's own code, which words it otherwise"
BACKPORT_DIFFERENCES = {
    "DummyBackendTestCase.test_validate_disallowed_async_task": _WORDING,
    "CustomBackendTestCase.test_enqueue_async_task_on_non_async_backend": _WORDING,
    "DummyBackendTestCase.test_enqueue_logs": "asserts a log record of Django 6.0's logger 'django.tasks'; the "
    "backport logs the same record to 'django_tasks'",
}


def skip_reason(test_id: str, method: Callable[..., object], on_backport: bool) -> str | None:
    """Why this test does not run against PgqdTaskBackend, or None when it runs."""
    class_name, name = test_id.split(".")[-2:]
    if on_backport and f"{class_name}.{name}" in BACKPORT_DIFFERENCES:
        return BACKPORT_DIFFERENCES[f"{class_name}.{name}"]
    for prefix, reason in SKIPPED_MODULES.items():
        if test_id.startswith(prefix + "."):
            return reason
    if class_name in SKIPPED_CLASSES:
        return SKIPPED_CLASSES[class_name]
    if f"{class_name}.{name}" in SKIPPED_TESTS:
        return SKIPPED_TESTS[f"{class_name}.{name}"]
    if not test_id.startswith("tests.tests."):
        return None
    try:
        source = inspect.getsource(method)
    except (OSError, TypeError):
        return None
    for marker, reason in SOURCE_MARKERS:
        if marker in source:
            return reason
    return None

"""Django: enqueueing inside transaction.atomic() on Django's own connection, and the Tasks backend run end to end
by the real daemon. Django is configured once per test session (tests/django_project); each test points its
connection at that test's fresh database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

from examples.django_app.database import django_database
from pgqd.config.load import ConfigProblems, parse_config
from pgqd.config.render import render_effective
from pgqd.errors import BackendUnavailable
from tests.support.cli import run_pgqd
from tests.support.daemon import REPO, Daemon, StartDaemon, wait_for
from tests.support.dropped_port import packets_dropped, why_packets_cannot_be_dropped
from tests.support.tcp_proxy import TcpProxy

DSN_ENV = "PGQD_DJANGO_TEST_DSN"

CREATE_TABLES = """
CREATE TABLE test_signups (id serial PRIMARY KEY, email text NOT NULL, welcomed boolean DEFAULT false);
CREATE TABLE test_task_events (id serial PRIMARY KEY, result_id text NOT NULL, event text NOT NULL, status text);
"""

DJANGO_DAEMON = """
[workers]
processes = 1
concurrency = 8
poll_interval = "30s"
shutdown_timeout = "2s"

[metrics]
enabled = false

[logging]
format = "json"

[django]
settings = "tests.django_project.settings"

[django.queues.default]
retry = { max_attempts = 1 }

[django.queues.slow]
timeout = "300ms"

[django.queues.fragile]
retry = { max_attempts = 2, initial = "1h", max = "1h", jitter = false }
"""


@pytest.fixture(scope="session")
def django_project() -> None:
    import django

    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.django_project.settings"
    django.setup()


@pytest.fixture
def django_db(django_project: None, db_dsn: str) -> Iterator[str]:
    """Django's default connection on this test's database, with the table the test view writes to."""
    from django.db import connections

    connection = connections["default"]
    connection.close()
    connection.settings_dict.update(django_database(db_dsn))
    with connection.cursor() as cursor:
        cursor.execute(CREATE_TABLES)
    yield db_dsn
    connection.close()


def pgqd_enqueue(entrypoint: str, payload: Any) -> int:
    import pgqd.contrib.django

    job_id = pgqd.contrib.django.enqueue(entrypoint, payload)
    assert job_id is not None
    return job_id


def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        return list(cursor.fetchall())


def events(result_id: str) -> list[tuple[Any, ...]]:
    """The task signals sent for one task, in the test process and in the daemon's workers."""
    return query("SELECT event, status FROM test_task_events WHERE result_id = %s ORDER BY id", result_id)


def start_django_daemon(start_daemon: StartDaemon, dsn: str, extra: str = "") -> Daemon:
    return start_daemon(DJANGO_DAEMON + extra, env={DSN_ENV: dsn}).wait_ready()


def finished(result: Any, timeout: float = 15) -> Any:
    def refreshed() -> bool:
        result.refresh()
        return bool(result.is_finished)

    wait_for(refreshed, timeout, f"task {result.id} to finish")
    return result


def test_view_commit_keeps_the_jobs_and_rollback_leaves_none(django_db: str) -> None:
    from django.test import Client as TestClient

    browser = TestClient(raise_request_exception=False)
    failed = browser.post("/signup", {"email": "gone@example.com", "fail": "1"})
    assert failed.status_code == 500
    assert query("SELECT count(*) FROM test_signups") == [(0,)]
    assert query("SELECT count(*) FROM pgqd_jobs") == [(0,)]

    ok = browser.post("/signup", {"email": "ada@example.com"})
    assert ok.status_code == 200, ok.content
    body = ok.json()
    rows = query("SELECT id, entrypoint, payload FROM pgqd_jobs ORDER BY id")
    assert [(row[0], row[1]) for row in rows] == [(body["job"], "send_email"), (rows[1][0], "django.default")]
    assert bytes(rows[0][2]) == b'{"to":"ada@example.com"}'
    assert body["task"] == str(rows[1][0])


def test_enqueue_outside_atomic_commits_by_itself(django_db: str) -> None:
    from django.db import connection

    import pgqd.contrib.django

    job_id = pgqd.contrib.django.enqueue("send_email", {"to": "b@example.com"}, priority=3)
    assert connection.get_autocommit()
    import psycopg

    with psycopg.connect(django_db) as other:
        seen = other.execute("SELECT entrypoint, priority FROM pgqd_jobs WHERE id = %s", [job_id]).fetchall()
    assert seen == [("send_email", 3)]


@contextlib.contextmanager
def django_connection(**settings: Any) -> Iterator[None]:
    """Django's default connection reopened with these settings (``OPTIONS``: libpq's connection parameters),
    and with the test's own again afterwards."""
    from django.db import connection

    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(settings)
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def signup_and_enqueue(email: str, fault: contextlib.AbstractContextManager[Any] | None = None) -> None:
    """What the test view does: business data and a job in one transaction; ``fault`` around the enqueue."""
    from django.db import transaction

    with transaction.atomic():
        query("INSERT INTO test_signups (email) VALUES (%s) RETURNING id", email)
        with fault or contextlib.nullcontext():
            pgqd_enqueue("send_email", {"to": email})


def nothing_kept_but(jobs: int) -> None:
    assert query("SELECT count(*) FROM test_signups") == [(0,)]
    assert query("SELECT count(*) FROM pgqd_jobs") == [(jobs,)]


# The enqueue runs on Django's connection, so a database that stops answering holds it as it holds any ORM
# query, and what bounds it is the connection's own settings (docs/producers.md, "A database that stops
# answering"). The bounds below are loose: they tell the setting's few seconds from a hang (pytest-timeout's
# 120 s, or TCP's own retries for some 15 minutes).


def test_an_enqueue_that_waits_on_a_lock_ends_at_the_statement_timeout_and_its_transaction_keeps_nothing(
    django_db: str,
) -> None:
    import psycopg

    with django_connection(OPTIONS={"options": "-c statement_timeout=1000"}):
        with psycopg.connect(django_db) as locker:
            locker.execute("LOCK TABLE pgqd_jobs IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match="statement timeout"):
                signup_and_enqueue("held@example.com")
            waited = time.monotonic() - started
        assert waited < 30
        nothing_kept_but(jobs=0)
        signup_and_enqueue("later@example.com")
        assert query("SELECT email FROM test_signups") == [("later@example.com",)]


@pytest.mark.skipif(why_packets_cannot_be_dropped() is not None, reason=str(why_packets_cannot_be_dropped()))
@pytest.mark.parametrize("conn_max_age", [0, 600], ids=["new-connection-per-request", "persistent-connections"])
def test_an_enqueue_over_a_dead_link_ends_at_the_tcp_user_timeout_and_the_next_one_reconnects(
    django_db: str, conn_max_age: int
) -> None:
    """The database's packets go nowhere and nothing answers (a host gone, a cable cut): libpq's
    ``tcp_user_timeout`` ends the call, the transaction is lost with the connection, and Django opens a new one
    for the next enqueue, also when it keeps connections between requests."""
    from django.db import close_old_connections

    with (
        TcpProxy.for_dsn(django_db) as proxy,
        django_connection(
            **django_database(proxy.route(django_db)), OPTIONS={"tcp_user_timeout": 1500}, CONN_MAX_AGE=conn_max_age
        ),
    ):
        pgqd_enqueue("send_email", {"to": "before@example.com"})
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="timed out"):
            signup_and_enqueue("cut@example.com", fault=packets_dropped(proxy.port))
        waited = time.monotonic() - started
        assert waited < 30
        close_old_connections()  # what Django does at the end of each request
        nothing_kept_but(jobs=1)
        signup_and_enqueue("after@example.com")
        assert query("SELECT email FROM test_signups") == [("after@example.com",)]


def test_task_arguments_json_cannot_carry_fail_at_enqueue(django_db: str) -> None:
    from tests.django_project.tasks import add

    with pytest.raises(TypeError, match=r"tests.django_project.tasks.add: arguments must be JSON-serialisable"):
        add.enqueue(1, object())
    with pytest.raises(TypeError, match="JSON-serialisable"):
        add.enqueue(float("nan"), 1)
    assert query("SELECT count(*) FROM pgqd_jobs") == [(0,)]


def test_get_result_trusts_nothing_in_the_id_but_the_job_number(django_db: str) -> None:
    from pgqd.contrib.django.compat import TaskResultDoesNotExist, TaskResultStatus, task_backends
    from tests.django_project import tasks

    result = tasks.add.enqueue(2, 3)
    job = int(result.id)
    assert result.id == str(job)
    plain_job = pgqd_enqueue("send_email", {"to": "a@example.com"})
    elsewhere = tasks.add.using(backend="other").enqueue(1, 1)
    not_ids = [
        f"{job}:tests.django_project.tasks.explode",  # another task's path
        f"{job}:tests.django_project.tripwire.task",  # a module that fails if imported
        f"{job}:os.system",
        "tests.django_project.tasks.add",
        "garbage",
        "",
        "-1",
        "0",
        f"0{job}",
        f"{job} ",
        f"{job}\n",
        "\u0661\u0662",  # digits, but not ASCII ones
        "\x00",
        f"{job}\x00",
        "x" * 100_000,
        str(2**63),
        "9" * 400,
        f"{job}.0",
        "123e4567-e89b-12d3-a456-426614174000",  # another backend's id
        str(plain_job),  # a pgqd job that is no Django task
        elsewhere.id,  # a task of another backend alias on the same tables
        str(job + 1000),  # no such job
    ]
    for value in not_ids:
        with pytest.raises(TaskResultDoesNotExist):
            task_backends["default"].get_result(value)
    assert "tests.django_project.tripwire" not in sys.modules
    assert task_backends["other"].get_result(elsewhere.id).task.backend == "other"
    # Ids handed out before ids were bare numbers still name their job, with the task path it was enqueued with.
    assert task_backends["default"].get_result(f"{job}:tests.django_project.tasks.add").id == result.id

    again = tasks.add.get_result(result.id)
    assert again == result  # enqueued_at, args and all: read from the database on both sides
    assert again.status == TaskResultStatus.READY


def test_enqueue_gives_the_result_get_result_reads(django_db: str) -> None:
    from django.utils import timezone

    from tests.django_project import tasks

    later = tasks.echo.using(run_after=timezone.now() + timedelta(hours=1), priority=3).enqueue({7: "seven"}, k=(1,))
    assert (later.args, later.kwargs) == ([{"7": "seven"}], {"k": [1]})
    again = tasks.echo.get_result(later.id)
    assert again == later
    assert again.task.run_after == later.task.run_after is not None
    assert again.task.priority == 3


@pytest.mark.slow
def test_tasks_run_in_the_daemon_and_results_come_back(django_db: str, start_daemon: StartDaemon) -> None:
    from django.utils import timezone

    from pgqd.contrib.django.compat import TaskResultDoesNotExist, TaskResultStatus
    from tests.django_project import tasks

    start_django_daemon(start_daemon, django_db)
    added = tasks.add.enqueue(2, 3)
    failed = tasks.explode.enqueue("boom")
    doubled = asyncio.run(tasks.double_later.aenqueue(21))
    attempt = tasks.which_attempt.enqueue()
    unstorable = tasks.returns_a_set.enqueue()
    urgent = tasks.add.using(priority=7).enqueue(1, 1)
    assert added.status == TaskResultStatus.READY

    assert finished(added).status == TaskResultStatus.SUCCESSFUL
    assert events(added.id) == [("enqueued", "READY"), ("started", "RUNNING"), ("finished", "SUCCESSFUL")]
    assert added.return_value == 5
    assert added.args == [2, 3]
    assert added.attempts == 1

    assert finished(failed).status == TaskResultStatus.FAILED
    assert [error.exception_class_path for error in failed.errors] == ["builtins.ValueError"]
    assert failed.errors[0].exception_class is ValueError
    assert "ValueError: boom" in failed.errors[0].traceback
    assert "explode" in failed.errors[0].traceback

    assert events(failed.id)[-1] == ("finished", "FAILED")
    assert finished(doubled).return_value == {"double": 42, "on_loop": True}
    assert events(doubled.id) == [("enqueued", "READY"), ("started", "RUNNING"), ("finished", "SUCCESSFUL")]
    assert finished(attempt).return_value == 1
    assert finished(unstorable).status == TaskResultStatus.FAILED
    assert unstorable.errors[0].exception_class_path == "builtins.TypeError"
    assert "cannot be stored as its result" in unstorable.errors[0].traceback

    assert query("SELECT priority FROM pgqd_log WHERE job_id = %s", int(urgent.id)) == [(7,)]
    again = tasks.add.get_result(urgent.id)
    assert again.task.priority == 7
    assert again.return_value == 2

    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result("999999")
    # Finished tasks keep their arguments, and a dict's int keys are strings on both sides, as JSON has them.
    echoed = finished(tasks.echo.enqueue({1: "one"}, key={2: [3]}))
    assert (echoed.args, echoed.kwargs) == ([{"1": "one"}], {"key": {"2": [3]}})
    assert echoed.return_value == {"args": [{"1": "one"}], "kwargs": {"key": {"2": [3]}}}
    # A task enqueued through an alias the workers' settings lack still runs; it is no result of this alias.
    call = {"task": "tests.django_project.tasks.add", "args": [1, 2], "kwargs": {}, "backend": "gone"}
    stray = pgqd_enqueue("django.default", call)

    def stray_done() -> list[tuple[Any, ...]]:
        return query("SELECT status::text, result::text FROM pgqd_log WHERE job_id = %s", stray)

    assert wait_for(stray_done, 15, "the stray task to run") == [("successful", "3")]
    with pytest.raises(TaskResultDoesNotExist):
        tasks.add.get_result(str(stray))
    # The task's own context and get_result name the worker alike: pgqd's worker id, as the log has it.
    seen = finished(tasks.worker_ids_seen.enqueue())
    (logged_worker,) = query("SELECT worker_id FROM pgqd_log WHERE job_id = %s", int(seen.id))[0]
    assert seen.worker_ids == seen.return_value == [str(logged_worker)]

    later = tasks.add.using(run_after=timezone.now() + timedelta(seconds=1.5)).enqueue(4, 4)
    assert tasks.add.get_result(later.id).task.run_after == later.task.run_after
    assert query("SELECT status::text FROM pgqd_jobs WHERE id = %s", int(later.id)) == [("deferred",)]
    assert finished(later).return_value == 8
    assert later.started_at is not None
    assert later.started_at >= later.task.run_after


@pytest.mark.slow
def test_the_view_commit_runs_the_task_and_its_queue_limits_come_from_the_toml(
    django_db: str, start_daemon: StartDaemon
) -> None:
    from django.test import Client as TestClient

    import pgqd.contrib.django
    from pgqd.contrib.django.compat import TaskResultStatus
    from tests.django_project import tasks

    start_django_daemon(start_daemon, django_db)
    TestClient(raise_request_exception=False).post("/signup", {"email": "x@example.com", "fail": "1"})
    response = TestClient().post("/signup", {"email": "grace@example.com"})
    welcome = finished(tasks.welcome.get_result(response.json()["task"]))
    assert welcome.return_value == "welcome grace@example.com"
    assert query("SELECT email, welcomed FROM test_signups") == [("grace@example.com", True)]
    # The rolled-back request left nothing to run: one task in the log, the committed one.
    assert query("SELECT count(*) FROM pgqd_log WHERE entrypoint = 'django.default'") == [(1,)]

    # Queue "slow" is entrypoint "django.slow", whose timeout the config sets to 300ms.
    slow = finished(tasks.sleepy.enqueue(1.0))
    assert slow.status == TaskResultStatus.FAILED
    assert slow.errors[0].exception_class_path == "builtins.TimeoutError"

    # Queue "fragile" retries after an hour: meanwhile the task is READY again, with the first attempt's error.
    refused = tasks.refuse.enqueue()

    def retry_waits() -> bool:
        refused.refresh()
        return bool(refused.errors)

    wait_for(retry_waits, 15, "the first attempt to fail")
    assert refused.status == TaskResultStatus.READY
    assert refused.attempts == 1
    assert refused.errors[0].exception_class_path == "builtins.PermissionError"
    pgqd.contrib.django.client().cancel(int(refused.id))
    refused.refresh()
    assert refused.status == TaskResultStatus.FAILED
    assert refused.errors[0].exception_class_path == "asyncio.exceptions.CancelledError"


def test_each_django_queue_is_an_entrypoint_with_the_limits_of_its_section() -> None:
    config = parse_config(
        '[django]\nsettings = "mysite.settings"\n'
        '[django.queues.emails]\nrate_limit = "5/s"\nretry = { max_attempts = 3 }\n'
        "[django.queues.default]\n"
    )
    served = config.served_entrypoints
    assert sorted(served) == ["django.default", "django.emails"]
    assert served["django.emails"].handler == "pgqd.contrib.django.worker:run_task"
    assert served["django.emails"].store_result is True
    assert served["django.emails"].retry.max_attempts == 3
    assert str(served["django.emails"].rate_limit) == "5/s"
    # Without [django.queues.*] the daemon serves Django's default queue; `pgqd config` shows it.
    alone = parse_config('[django]\nsettings = "mysite.settings"\n')
    assert list(alone.served_entrypoints) == ["django.default"]
    assert "[django.queues.default]" in render_effective(alone)


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('[django]\nsetting = "m"', "[django] setting: unknown key (did you mean 'settings'?)"),
        ('[django]\nsettings = "my site"', "[django] settings: 'my site' is not valid: use a dotted module path"),
        ('[django]\nsettings = "m"\n[django.queues.a]\nhandler = "a:b"', "[django.queues.a] handler: unknown key"),
        ('[django]\nsettings = "m"\n[django.queues.a]\ntimeout = 5', "[django.queues.a] timeout: expected a duration"),
        (
            '[django]\nsettings = "m"\n[entrypoints."django.default"]\nhandler = "a:b"',
            '[django.queues.default]: the queue is served as entrypoint "django.default", which '
            '[entrypoints."django.default"] defines too',
        ),
    ],
)
def test_invalid_django_sections_name_the_key(toml: str, problem: str) -> None:
    with pytest.raises(ConfigProblems) as raised:
        parse_config(toml)
    assert problem in str(raised.value)


def test_check_fails_at_start_when_the_settings_module_cannot_be_found(tmp_path: Path) -> None:
    path = tmp_path / "queue.toml"
    path.write_text('[django]\nsettings = "no_such_project.settings"\n')
    result = run_pgqd("check", "--config", str(path))
    assert result.returncode == 2
    assert '[django] settings: "no_such_project.settings" could not be found: ModuleNotFoundError' in result.stderr


def run_python(*args: str, env: dict[str, str]) -> str:
    """Runs Python in the repository in a fresh process (Django's settings are per process) and returns stdout."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def example_manage(dsn: str, *args: str) -> str:
    env = {"PGQD_DSN": dsn, "DJANGO_SETTINGS_MODULE": "examples.django_app.settings"}
    return run_python("examples/django_app/manage.py", *args, env=env)


@pytest.mark.slow
def test_the_example_project_enqueues_in_its_view_and_the_daemon_runs_its_task(
    db_dsn: str, start_daemon: StartDaemon
) -> None:
    import psycopg

    example_manage(db_dsn, "migrate", "--verbosity", "0")
    start_daemon(
        '[workers]\nprocesses = 1\n[metrics]\nenabled = false\n[django]\nsettings = "examples.django_app.settings"\n'
    )
    posted = example_manage(
        db_dsn,
        "shell",
        "-c",
        "from django.test import Client; browser = Client();"
        " print(browser.post('/signup', {'email': 'nobody'}).status_code);"
        " print(browser.post('/signup', {'email': 'ada@example.com'}).content.decode());"
        " print(browser.post('/count').content.decode())",
    )
    refused, created, counting = posted.splitlines()[-3:]
    assert refused == "400"
    body = json.loads(created)
    count_id = json.loads(counting)["task"]

    def welcomed() -> list[tuple[Any, ...]]:
        with psycopg.connect(db_dsn) as conn:
            return conn.execute("SELECT email FROM django_app_signup WHERE welcomed_at IS NOT NULL").fetchall()

    assert wait_for(welcomed, 20, "the example's welcome task to run") == [("ada@example.com",)]
    shown = example_manage(
        db_dsn,
        "shell",
        "-c",
        "import time; from django.test import Client; browser = Client()\n"
        "for _ in range(100):\n"
        f"    counted = browser.get('/tasks/{count_id}').content.decode()\n"
        "    if 'SUCCESSFUL' in counted: break\n"
        "    time.sleep(0.1)\n"
        f"print(browser.get('/tasks/{body['task']}').content.decode()); print(counted)",
    )
    welcomed_result, counted = (json.loads(line) for line in shown.splitlines()[-2:])
    assert welcomed_result == {"status": "SUCCESSFUL", "value": "welcomed ada@example.com", "errors": []}
    assert counted == {"status": "SUCCESSFUL", "value": 1, "errors": []}
    with psycopg.connect(db_dsn) as conn:
        jobs = conn.execute("SELECT entrypoint, status::text FROM pgqd_jobs").fetchall()
        signups = conn.execute("SELECT email FROM django_app_signup").fetchall()
    # The plain pgqd job waits for a send_email handler this daemon does not have; the refused signup left none.
    assert jobs == [("send_email", "queued")]
    assert signups == [("ada@example.com",)]


PSYCOPG2_CHECK = (
    f"CREATE_TABLES = {CREATE_TABLES!r}\n"
    + """
import sys
sys.modules["psycopg"] = None  # Django then uses psycopg2, as in projects that have not moved to psycopg 3
import django
django.setup()
from django.db import connection
from django.test import Client
from tests.django_project.tasks import add
assert connection.Database.__name__ == "psycopg2", connection.Database
with connection.cursor() as cursor:
    cursor.execute(CREATE_TABLES)
browser = Client(raise_request_exception=False)
print(browser.post("/signup", {"email": "gone@example.com", "fail": "1"}).status_code)
print(browser.post("/signup", {"email": "ada@example.com"}).status_code)
result = add.enqueue(2, 3)
again = add.get_result(result.id)
print(again.status, again.args)
with connection.cursor() as cursor:
    cursor.execute("SELECT entrypoint FROM pgqd_jobs ORDER BY id")
    print([row[0] for row in cursor.fetchall()])
"""
)


@pytest.mark.slow
def test_django_on_psycopg2_enqueues_in_its_transactions_too(db_dsn: str) -> None:
    pytest.importorskip("psycopg2")
    env = {DSN_ENV: db_dsn, "DJANGO_SETTINGS_MODULE": "tests.django_project.settings"}
    assert run_python("-c", PSYCOPG2_CHECK, env=env).splitlines() == [
        "500",
        "200",
        "READY [2, 3]",
        "['send_email', 'django.default', 'django.default']",
    ]


def test_backend_options_are_checked(django_project: None) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from pgqd import IdentifierError
    from pgqd.contrib.django import PgqdTaskBackend

    with pytest.raises(ImproperlyConfigured, match=r"unknown option\(s\) PREFX .*DATABASE, PREFIX, SCHEMA"):
        PgqdTaskBackend("default", {"OPTIONS": {"PREFX": "jobs_"}})
    with pytest.raises(IdentifierError, match="schema 'My Schema' is not a plain identifier"):
        PgqdTaskBackend("default", {"OPTIONS": {"SCHEMA": "My Schema"}})
    backend = PgqdTaskBackend("default", {"OPTIONS": {"DATABASE": "other", "PREFIX": "jobs_"}})
    assert (backend.database, backend.names.table("jobs")) == ("other", '"public"."jobs_jobs"')

"""Configuration: every mistake gets a precise message and exit status 2; good files round-trip."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pgqd.config.load import ConfigProblems, WebCredentials, parse_config, web_credentials
from pgqd.config.render import render_effective, starter_config
from pgqd.errors import ConfigError
from pgqd.identifiers import Names
from tests.support.cli import run_pgqd

GOOD = """
[database]
dsn = "postgresql://app:hunter2@db.internal:5432/app"

[workers]
processes = 2
poll_interval = "250ms"

[entrypoints.sleeper]
handler = "tests.support.daemon_app:sleeper"
rate_limit = "10/s"
retry = { max_attempts = 3, initial = "1s" }

[schedules.nightly]
cron = "0 3 * * *"
entrypoint = "sleeper"
timezone = "Europe/Oslo"
"""

ENTRY = '[entrypoints.sleeper]\nhandler = "tests.support.daemon_app:sleeper"\n'

BAD_CONFIGS = [
    ("[workers\nprocesses = 2\n", "invalid TOML"),
    ("[workers]\nprocesses = 2\n" + ENTRY + "[workers]\n", "invalid TOML"),
    ("[workers]\nconcurency = 4\n" + ENTRY, "[workers] concurency: unknown key (did you mean 'concurrency'?)"),
    ("[databse]\nschema = 'x'\n" + ENTRY, "databse: unknown key (did you mean 'database'?)"),
    ("[workers]\nprocesses = 'four'\n" + ENTRY, "[workers] processes: expected an integer, got a string 'four'"),
    ("[workers]\nprocesses = 0\n" + ENTRY, "[workers] processes: must be at least 1, got 0"),
    ("[workers]\nconcurrency = true\n" + ENTRY, "[workers] concurrency: expected an integer, got a boolean"),
    ("[workers]\npoll_interval = 5\n" + ENTRY, '[workers] poll_interval: expected a duration string such as "30s"'),
    ("[workers]\nshutdown_timeout = '10 seconds'\n" + ENTRY, "[workers] shutdown_timeout: invalid duration"),
    ("[workers]\nresources = 'no_colon'\n" + ENTRY, "[workers] resources: 'no_colon' is not valid: use \"package"),
    (ENTRY + "rate_limit = '10/fortnight'\n", "[entrypoints.sleeper] rate_limit: invalid rate '10/fortnight'"),
    (ENTRY + "rate_limit = '0/s'\n", "[entrypoints.sleeper] rate_limit: invalid rate '0/s'"),
    (ENTRY + "on_failure = 'retry'\n", '[entrypoints.sleeper] on_failure: must be one of "delete", "hold"'),
    (ENTRY + "concurrency_limit = -1\n", "[entrypoints.sleeper] concurrency_limit: must be at least 0, got -1"),
    (ENTRY + "retry = { max_attempts = 0 }\n", "[entrypoints.sleeper.retry] max_attempts: must be at least 1"),
    (ENTRY + "retry = { bakoff = 'linear' }\n", "[entrypoints.sleeper.retry] bakoff: unknown key (did you mean"),
    ("[entrypoints.mail]\nconcurrency_limit = 1\n", "[entrypoints.mail] handler: required key is missing"),
    ("[entrypoints.mail]\nhandler = 'tests.nowhere:send'\n", "could not be imported: ModuleNotFoundError"),
    ("[entrypoints.mail]\nhandler = 'tests.support.daemon_app:nope'\n", "has no attribute 'nope'"),
    ("[entrypoints.mail]\nhandler = 'tests.support.daemon_app:CREATE_RUNS'\n", "is not callable"),
    ("[workers]\nprocesses = 1\n", "no entrypoints: add at least one [entrypoints.NAME] section"),
    (ENTRY + "[schedules.n]\ncron = '61 * * * *'\nentrypoint = 'sleeper'\n", "is not a valid cron expression"),
    (ENTRY + "[schedules.n]\ncron = '* * *'\nentrypoint = 'sleeper'\n", "is not a valid cron expression"),
    (ENTRY + "[schedules.n]\ncron = '0 3 * * *'\nentrypoint = 'sleepr'\n", "'sleepr' is not an entrypoint"),
    (
        ENTRY + "[schedules.n]\ncron = '0 3 * * *'\nentrypoint = 'sleeper'\ntimezone = 'Mars/Base'\n",
        "unknown time zone 'Mars/Base'",
    ),
    ("[database]\nprefix = 'Bad-Prefix'\n" + ENTRY, "[database] prefix: 'Bad-Prefix' is not valid"),
    ("[database]\nschema = '" + "s" * 64 + "'\n" + ENTRY, "[database] schema: '" + "s" * 64 + "' is not valid"),
    ("[database]\ndsn = 'postgresql:///x'\nembedded = 'pgdata'\n" + ENTRY, "set either dsn"),
    ("[metrics]\nlisten = 'localhost'\n" + ENTRY, "[metrics] listen: 'localhost' is not valid"),
    ("[logging]\nlevel = 'verbose'\n" + ENTRY, "[logging] level: must be one of"),
    ("[retention]\nlog = 'forever'\n" + ENTRY, "[retention] log: invalid duration 'forever'"),
    ("[entrypoints.'send mail']\nhandler = 'tests.support.daemon_app:sleeper'\n", "is not an entrypoint name"),
    ("[web]\ntrusted_proxies = ['10.0.0.300']\n" + ENTRY, "[web] trusted_proxies: '10.0.0.300' is not an IP"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_CONFIGS, ids=[f"bad{i:02d}" for i in range(len(BAD_CONFIGS))])
def test_a_bad_config_fails_check_with_a_precise_message_and_status_2(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "queue.toml"
    path.write_text(text)
    result = run_pgqd("check", "--config", str(path))
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert str(path) in result.stderr


def test_the_daemon_itself_refuses_a_bad_config_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "queue.toml"
    path.write_text("[entrypoints.mail]\nhandler = 'tests.nowhere:send'\n")
    result = run_pgqd("--config", str(path))
    assert result.returncode == 2
    assert '[entrypoints.mail] handler: "tests.nowhere:send" could not be imported' in result.stderr


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigProblems) as caught:
        parse_config("[workers]\nprocesses = 0\nbatch_size = 'x'\n[entrypoints.a]\nhandler = 'x'\n")
    assert len(caught.value.problems) == 3


def test_the_longest_schema_name_the_config_takes_is_one_the_tables_can_be_named_in() -> None:
    longest = "s" * 63
    config = parse_config(f"[database]\nschema = '{longest}'\n" + ENTRY, env={})
    assert config.database.schema == longest
    assert Names(longest, config.database.prefix).table("jobs").startswith(f'"{longest}".')


def test_a_missing_config_file_says_how_to_make_one(tmp_path: Path) -> None:
    result = run_pgqd("check", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert "no such file (`pgqd init" in result.stderr
    no_path = run_pgqd("check", env={"PGQD_CONFIG": ""})
    assert no_path.returncode == 2
    assert "pass --config queue.toml or set $PGQD_CONFIG" in no_path.stderr


def test_config_path_from_the_environment(tmp_path: Path, db_dsn: str) -> None:
    path = tmp_path / "queue.toml"
    path.write_text(ENTRY)
    result = run_pgqd("check", env={"PGQD_CONFIG": str(path), "PGQD_DSN": db_dsn})
    assert result.returncode == 0, result.stderr
    assert "OK (1 entrypoints" in result.stdout


def test_check_reports_an_unreachable_database_and_an_old_schema(tmp_path: Path, empty_dsn: str) -> None:
    path = tmp_path / "queue.toml"
    path.write_text(ENTRY)
    down = run_pgqd("check", "--config", str(path), env={"PGQD_DSN": "postgresql://u:pw@127.0.0.1:1/x"})
    assert down.returncode == 1
    assert "could not connect" in down.stderr
    missing = run_pgqd("check", "--config", str(path), env={"PGQD_DSN": empty_dsn})
    assert missing.returncode == 1
    assert "run `pgqd install`" in missing.stderr


def test_effective_config_fills_defaults_and_masks_the_password(tmp_path: Path) -> None:
    path = tmp_path / "queue.toml"
    path.write_text(GOOD)
    result = run_pgqd("config", "--config", str(path), env={"PGQD_DSN": ""})
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    effective = tomllib.loads(result.stdout)
    assert effective["database"]["dsn"] == "postgresql://app:***@db.internal:5432/app"
    assert effective["workers"]["poll_interval"] == "250ms"
    assert effective["workers"]["shutdown_timeout"] == "30s"
    assert effective["entrypoints"]["sleeper"]["rate_limit"] == "10/s"
    assert effective["entrypoints"]["sleeper"]["retry"] == {
        "max_attempts": 3,
        "backoff": "exponential",
        "initial": "1s",
        "max": "10m",
        "jitter": True,
    }
    assert effective["schedules"]["nightly"]["misfire"] == "coalesce"


def test_effective_config_reads_back_to_the_same_config() -> None:
    config = parse_config(GOOD, env={})
    again = parse_config(render_effective(config).replace("app:***@", "app:hunter2@"), env={})
    assert again == config


def test_dsn_from_the_environment_overrides_the_file() -> None:
    config = parse_config(GOOD, env={"PGQD_DSN": "postgresql://other@h/db"})
    assert config.database.dsn == "postgresql://other@h/db"


def test_init_writes_a_commented_starter_that_validates(tmp_path: Path) -> None:
    target = tmp_path / "queue.toml"
    result = run_pgqd("init", str(target))
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    assert text == starter_config()
    assert "# jobs in flight per worker process" in text
    config = parse_config(text, env={})
    assert config.entrypoints["send_email"].handler == "myapp.tasks:send_email"
    again = run_pgqd("init", str(target))
    assert again.returncode == 2
    assert "exists: pass --force" in again.stderr
    assert run_pgqd("init", str(target), "--force").returncode == 0


def test_the_reference_config_in_the_repository_is_current() -> None:
    reference = Path(__file__).resolve().parents[1] / "config" / "reference.toml"
    assert reference.read_text() == starter_config(), "regenerate config/reference.toml with `pgqd init --force`"


def test_web_secrets_come_from_the_environment_then_a_file_then_the_config(tmp_path: Path) -> None:
    secret = tmp_path / "web-password"
    secret.write_text("from-file\n")
    text = '[entrypoints.a]\nhandler = "m:f"\n[web]\npassword_file = "web-password"\ntoken = "s3cret-tok"\n'
    config = parse_config(text, tmp_path / "queue.toml", env={})
    assert web_credentials(config, env={}) == WebCredentials("pgqd", "from-file", "s3cret-tok")
    overridden = web_credentials(config, env={"PGQD_WEB_PASSWORD": "from-env", "PGQD_WEB_TOKEN": "env-tok"})
    assert (overridden.password, overridden.token) == ("from-env", "env-tok")
    assert "s3cret-tok" not in render_effective(config)


def test_web_secret_given_twice_or_in_an_empty_file_is_refused(tmp_path: Path) -> None:
    both = '[entrypoints.a]\nhandler = "m:f"\n[web]\npassword = "a"\npassword_file = "p"\n'
    with pytest.raises(ConfigError, match=r"\[web\]: set either password or password_file"):
        parse_config(both, env={})
    (tmp_path / "empty").write_text("\n")
    config = parse_config(
        '[entrypoints.a]\nhandler = "m:f"\n[web]\ntoken_file = "empty"\n', tmp_path / "q.toml", env={}
    )
    with pytest.raises(ConfigError, match=r"\[web\] token_file: .*empty is empty"):
        web_credentials(config, env={})

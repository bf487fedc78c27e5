"""The Flask example app (examples/flask_app.py) through Flask's test client, on a fresh database."""

from __future__ import annotations

import psycopg
import pytest

pytest.importorskip("flask")

from collections.abc import Iterator

from flask.testing import FlaskClient

from examples.flask_app import create_app


def rows(dsn: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def browser(db_dsn: str) -> Iterator[FlaskClient]:
    app = create_app(db_dsn)
    yield app.test_client()
    app.extensions["pgqd_example_pool"].close()


def test_signup_commits_the_row_and_the_job_together(browser: FlaskClient, db_dsn: str) -> None:
    created = browser.post("/signup", data={"email": "ada@example.com"})
    assert created.status_code == 201, created.text
    job_id = created.json["job"]
    assert rows(db_dsn, "SELECT email FROM flask_signups") == [("ada@example.com",)]
    assert rows(db_dsn, "SELECT id, entrypoint, convert_from(payload, 'UTF8') FROM pgqd_jobs") == [
        (job_id, "send_email", '{"to":"ada@example.com","subject":"Welcome"}')
    ]
    shown = browser.get(f"/jobs/{job_id}")
    assert shown.json == {"id": job_id, "status": "queued", "attempts": 0, "result": None}
    assert browser.post("/signup", data={"email": "ada@example.com"}).status_code == 409
    assert browser.get("/jobs/999999").status_code == 404


def test_a_failed_signup_rolls_back_the_row_and_the_job(browser: FlaskClient, db_dsn: str) -> None:
    refused = browser.post("/signup", data={"email": "not-an-address"})
    assert refused.status_code == 400
    assert refused.json == {"error": "not an email address: not-an-address"}
    assert rows(db_dsn, "SELECT count(*) FROM flask_signups") == [(0,)]
    assert rows(db_dsn, "SELECT count(*) FROM pgqd_jobs") == [(0,)]
    assert rows(db_dsn, "SELECT count(*) FROM pgqd_log") == [(0,)]

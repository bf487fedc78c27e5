"""A Flask app that enqueues into the example daemon with ``pgqd.SyncClient``, inside its own transaction.

    scripts/run-example                                        # the daemon, in one terminal
    .venv/bin/flask --app examples.flask_app run --port 5000
    curl -d email=ada@example.com http://127.0.0.1:5000/signup
    curl http://127.0.0.1:5000/jobs/1

The database is $PGQD_DSN, else the example daemon's embedded server.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, abort, request
from psycopg_pool import ConnectionPool

from pgqd import SyncClient
from pgqd.daemon.embedded import running_dsn

CREATE_SIGNUPS = "CREATE TABLE IF NOT EXISTS flask_signups (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL)"


def example_dsn() -> str:
    dsn = os.environ.get("PGQD_DSN") or running_dsn(Path(__file__).resolve().parents[1] / ".pgqd" / "pgdata")
    if not dsn:
        raise SystemExit("set PGQD_DSN, or start the example daemon first: scripts/run-example")
    return dsn


class BadEmail(ValueError):
    pass


def create_app(dsn: str | None = None) -> Flask:
    """The app on its own connection pool; `flask --app examples.flask_app run` calls this."""
    app = Flask(__name__)
    pool = ConnectionPool(dsn or example_dsn(), min_size=1, max_size=4, open=True)
    app.extensions["pgqd_example_pool"] = pool
    with pool.connection() as conn:
        conn.execute(CREATE_SIGNUPS)

    @app.post("/signup")
    def signup() -> tuple[dict[str, object], int]:
        email = request.form.get("email", "")
        # One transaction: the row and the job are committed together, or rolled back together.
        with pool.connection() as conn, conn.transaction():
            jobs = SyncClient(conn)
            (signup_id,) = conn.execute(
                "INSERT INTO flask_signups (email) VALUES (%s) ON CONFLICT DO NOTHING RETURNING id", [email]
            ).fetchone() or (None,)
            if signup_id is None:
                return {"error": "already signed up"}, 409
            job_id = jobs.enqueue("send_email", {"to": email, "subject": "Welcome"}, dedupe_key=f"welcome:{email}")
            if "@" not in email:
                # Raising inside the transaction block rolls back the signup and the job: no worker sees it.
                raise BadEmail(email)
        return {"signup": signup_id, "job": job_id}, 201

    @app.errorhandler(BadEmail)
    def bad_email(error: BadEmail) -> tuple[dict[str, object], int]:
        return {"error": f"not an email address: {error}"}, 400

    @app.get("/jobs/<int:job_id>")
    def job(job_id: int) -> dict[str, object]:
        with pool.connection() as conn:
            state = SyncClient(conn).status(job_id).get(job_id)
        if state is None:
            abort(404)
        return {"id": state.id, "status": state.status, "attempts": state.attempts, "result": state.result}

    return app

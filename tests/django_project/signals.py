"""Receivers of Django's task signals that record each one in a table, so a test can see what the daemon's worker
processes sent."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.dispatch import Signal

from pgqd.contrib.django.compat import task_enqueued, task_finished, task_started

EVENTS = {task_enqueued: "enqueued", task_started: "started", task_finished: "finished"}


def record(signal: Signal, task_result: Any, **_: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO test_task_events (result_id, event, status) VALUES (%s, %s, %s)",
            [task_result.id, EVENTS[signal], str(task_result.status)],
        )


for each in EVENTS:
    each.connect(record, dispatch_uid=f"test-{EVENTS[each]}")

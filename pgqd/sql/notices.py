"""The notices on an install's events channel (``Names.channel``): what each kind says, defined once.

A notice is a JSON object whose ``t`` names its kind:

- ``enqueued``: ``e``, the entrypoints that got claimable work (absent: any), and ``d``, the seconds until the
  earliest of it is due when none of it is due now (absent or null: due now). Idle workers of those entrypoints
  claim at once, or set a timer for ``d``. A producer's notice of new jobs also says ``p``, the highest priority
  among them: a worker whose claims read those entrypoints' ready jobs from a start (migration 0017) drops the
  start only for jobs of a higher priority than it. Without ``p`` (jobs put back in the queue with their old
  ids, or a producer of an older version) it drops the start.
- ``slot``: ``e``, concurrency-limited entrypoints whose jobs ended: a claim waiting for a slot may succeed.
- ``finished``: ``ids``, jobs someone waits on (``client.wait``) that ended or were held.
- ``cancel``: ``ids``, running jobs asked to stop.

Statements send them through the SQL expressions below; producers pass the payloads that ``enqueue_notice`` and
``wake_notice`` build as parameters; the listener reads every kind with ``parse_event``. Migrations send some
too, in PL/pgSQL fixed once applied: 0001's ``notify_ids`` (``finished`` and ``cancel``, in chunks), 0012's
``settle_children`` and ``enqueue_steps`` (``enqueued``). tests/test_notices.py checks that what those send is
what this module builds and reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal, get_args

from pgqd.models import Event, NewJob, NoticeKind, PlainJobs

KINDS: tuple[NoticeKind, ...] = get_args(NoticeKind)

# NOTIFY refuses a payload of 8000 bytes or more; a notice that would be larger names no entrypoint (it wakes
# every idle worker, which is always correct, only less precise).
_LARGEST = 7000
_WAKE_ALL = json.dumps({"t": "enqueued"})


# --- in SQL: each returns an expression for a statement; ``channel`` is the parameter holding the channel -------
def enqueued(channel: str, entrypoints: str, due_in: str | None = None) -> str:
    """Sends an ``enqueued`` notice: ``entrypoints`` a text[] expression, ``due_in`` seconds until the earliest
    job is due, NULL when one is due now (None: the notice says nothing of it, so the jobs are due now)."""
    due = "" if due_in is None else f", 'd', {due_in}"
    notice = f"json_build_object('t', 'enqueued', 'e', {entrypoints}{due})"
    return f"pg_notify({channel}::text, {_bounded(notice)})"


def enqueued_from(channel: str, rows: str) -> str:
    """A query that sends one ``enqueued`` notice for the entrypoints of ``rows`` (a relation with an
    ``entrypoint`` column) and returns one row, or sends nothing and returns none when ``rows`` is empty."""
    sent = enqueued(channel, "array_agg(DISTINCT a.entrypoint)")
    return f"SELECT {sent} AS sent\n    FROM {rows} AS a HAVING count(*) > 0"


def slot(channel: str, entrypoints: str) -> str:
    """Sends a ``slot`` notice: ``entrypoints`` a text[] expression."""
    notice = f"json_build_object('t', 'slot', 'e', {entrypoints})"
    return f"pg_notify({channel}::text, {_bounded(notice)})"


def _bounded(notice: str) -> str:
    """``notice`` (a json expression) as text, or the notice that wakes every idle worker when it is too large for
    NOTIFY: a rescue or a flush over many entrypoints with long names must not fail for its notice's sake. The
    expression is written twice; PostgreSQL computes an aggregate in it once."""
    # Braces doubled: statements are rendered with str.format (pgqd.sql.render).
    wake_all = _WAKE_ALL.replace("{", "{{").replace("}", "}}")
    return f"CASE WHEN octet_length(({notice})::text) <= {_LARGEST} THEN ({notice})::text ELSE '{wake_all}' END"


def ids(channel: str, kind: Literal["finished", "cancel"], job_ids: str) -> str:
    """Sends ``finished`` or ``cancel`` notices for ``job_ids`` (a bigint[] expression; nothing when NULL or
    empty), in as many notices as it takes to stay under the payload limit (``notify_ids``, migration 0001).
    Returns the number of notices sent. The template's ``{notify_ids}`` is filled when it is rendered."""
    return f"{{notify_ids}}({channel}::text, '{kind}', {job_ids})"


def given(channel: str, payload: str) -> str:
    """Sends a notice built by the caller (``enqueue_notice``, ``wake_notice``) and passed as ``payload``."""
    return f"pg_notify({channel}::text, {payload}::text)"


# --- in Python -------------------------------------------------------------------------------------------------
def wake_notice(entrypoints: Sequence[str]) -> str:
    """The ``enqueued`` notice that sends idle workers of these entrypoints (all when empty) to claim at once."""
    return _sized({"t": "enqueued", "e": sorted(set(entrypoints))})


def enqueue_notice(jobs: Sequence[NewJob]) -> str:
    """The ``enqueued`` notice of one enqueue statement: which entrypoints got work, and when it is due."""
    if isinstance(jobs, PlainJobs):  # none of them is deferred
        top = max(jobs.priorities, default=0)
        notice: dict[str, Any] = {"t": "enqueued", "e": sorted(set(jobs.entrypoints)), "p": top}
    else:
        top = max((job.priority for job in jobs), default=0)
        notice = {"t": "enqueued", "e": sorted({job.entrypoint for job in jobs}), "p": top}
        if all(job.delay > 0 and job.execute_after is None for job in jobs):
            notice["d"] = min(job.delay for job in jobs)
        elif all(job.execute_after is not None or job.delay > 0 for job in jobs):
            # Absolute times are judged on the producer's clock; a worker will also learn the exact due time
            # from its next claim, so a skewed producer delays nothing by more than one poll.
            notice["d"] = 0.0
    return _sized(notice)


def _sized(notice: dict[str, Any]) -> str:
    text = json.dumps(notice, separators=(",", ":"))
    return text if len(text) <= _LARGEST else _WAKE_ALL


def parse_event(payload: str) -> Event | None:
    """The event a notice announces, or None for a payload that is not a notice of a known kind."""
    try:
        data = json.loads(payload)
        kind = data.get("t")
        entrypoints = tuple(str(e) for e in data.get("e") or ())
        job_ids = tuple(int(i) for i in data.get("ids") or ())
        due = data.get("d")
        due_in = None if due is None else max(float(due), 0.0)
        top = data.get("p")
        top_priority = None if top is None else int(top)
    except (ValueError, TypeError, AttributeError):
        return None
    if kind not in KINDS:
        return None
    return Event(kind=kind, entrypoints=entrypoints, ids=job_ids, due_in=due_in, top_priority=top_priority)

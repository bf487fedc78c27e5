"""Every notice on the events channel has one definition, pgqd/sql/notices.py: what the statements send through
it is read back by the listener as it was meant, and what the PL/pgSQL of migrations 0001 and 0012 sends (fixed
once applied, so it cannot use the module) is what the module builds, byte for byte."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import asyncpg
import pytest

from pgqd import Client, Entrypoint, JobSpec, PostgresBackend, Worker
from pgqd.identifiers import Names
from pgqd.models import Event, NewJob
from pgqd.sql import notices, render
from tests.support.engine import drain, fast_settings
from tests.support.waiting import wait_until

CHANNEL = Names().channel
T = TypeVar("T")


class Channel:
    """The notices on the test database's events channel, as a worker's listener receives them."""

    def __init__(self, sender: Any) -> None:
        self.sender = sender
        self.payloads: list[str] = []

    def _received(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.append(payload)

    async def sent_by(self, action: Awaitable[T]) -> tuple[T, list[str]]:
        """What ``action`` returns, and the payloads of the notices it sent (and anything else since the last
        call). A marker sent afterwards arrives after them (notices are delivered in commit order)."""
        result = await action
        marker = f"marker {uuid.uuid4()}"
        await self.sender.execute("SELECT pg_notify($1, $2)", CHANNEL, marker)

        async def marker_arrived() -> bool:
            return marker in self.payloads

        await wait_until(marker_arrived, timeout=10, what="the marker notice")
        sent = self.payloads[: self.payloads.index(marker)]
        self.payloads = []
        return result, sent

    async def sql_sends(self, expression: str, *args: Any) -> list[str]:
        """What a notice expression of pgqd/sql/notices.py sends, rendered for this install, with ``args``."""
        return (await self.sent_by(self.sender.execute(f"SELECT {render(expression, Names())}", *args)))[1]


@pytest.fixture
async def channel(conn: Any, db_dsn: str) -> AsyncIterator[Channel]:
    listener = await asyncpg.connect(db_dsn)
    found = Channel(conn)
    await listener.add_listener(CHANNEL, found._received)
    try:
        yield found
    finally:
        await listener.close()


def events(payloads: list[str]) -> list[Event | None]:
    return [notices.parse_event(payload) for payload in payloads]


async def test_each_notice_a_statement_sends_is_read_as_it_was_meant(channel: Channel) -> None:
    enqueued = notices.enqueued("$1", "$2::text[]")
    assert events(await channel.sql_sends(enqueued, CHANNEL, ["a", "b"])) == [Event("enqueued", ("a", "b"))]
    due = notices.enqueued("$1", "$2::text[]", due_in="$3::double precision")
    assert events(await channel.sql_sends(due, CHANNEL, ["a"], 2.5)) == [Event("enqueued", ("a",), due_in=2.5)]
    assert events(await channel.sql_sends(due, CHANNEL, ["a"], None)) == [Event("enqueued", ("a",))]
    slot = notices.slot("$1", "$2::text[]")
    assert events(await channel.sql_sends(slot, CHANNEL, ["limited"])) == [Event("slot", ("limited",))]
    # Ids go in chunks that stay under NOTIFY's payload limit, each a notice of its own.
    finished = await channel.sql_sends(notices.ids("$1", "finished", "$2::bigint[]"), CHANNEL, list(range(1, 701)))
    assert [len(e.ids) for e in events(finished) if e is not None and e.kind == "finished"] == [300, 300, 100]
    assert [i for e in events(finished) if e is not None for i in e.ids] == list(range(1, 701))
    cancel = notices.ids("$1", "cancel", "$2::bigint[]")
    assert events(await channel.sql_sends(cancel, CHANNEL, [7])) == [Event("cancel", ids=(7,))]
    assert await channel.sql_sends(cancel, CHANNEL, []) == []
    given = notices.given("$1", "$2")
    later = notices.enqueue_notice([NewJob("mail", delay=30.0), NewJob("sms", delay=10.0)])
    # A producer's notice says the highest priority of its new jobs; one of jobs put back (above) does not.
    expected = Event("enqueued", ("mail", "sms"), due_in=10.0, top_priority=0)
    assert events(await channel.sql_sends(given, CHANNEL, later)) == [expected]
    urgent = notices.enqueue_notice([NewJob("mail", priority=5), NewJob("mail", priority=-1)])
    assert events(await channel.sql_sends(given, CHANNEL, urgent)) == [Event("enqueued", ("mail",), top_priority=5)]
    assert events(await channel.sql_sends(given, CHANNEL, notices.wake_notice([]))) == [Event("enqueued")]


async def test_a_notice_too_large_for_notify_wakes_every_worker_instead(channel: Channel) -> None:
    # NOTIFY refuses 8000 bytes; 60 entrypoints with names of the longest allowed (200 characters) need 12,000.
    many = [f"{n:03d}" + "x" * 197 for n in range(60)]
    for payload in (notices.wake_notice(many), notices.enqueue_notice([NewJob(name) for name in many])):
        assert events(await channel.sql_sends(notices.given("$1", "$2"), CHANNEL, payload)) == [Event("enqueued")]
    fits = many[:30]
    assert events(await channel.sql_sends(notices.given("$1", "$2"), CHANNEL, notices.wake_notice(fits))) == [
        Event("enqueued", tuple(fits))
    ]
    # The notices statements build in SQL (a rescue, a requeue, a flush over many entrypoints) do the same.
    for built in (notices.enqueued("$1", "$2::text[]"), notices.slot("$1", "$2::text[]")):
        assert events(await channel.sql_sends(built, CHANNEL, many)) == [Event("enqueued")]
    assert events(await channel.sql_sends(notices.slot("$1", "$2::text[]"), CHANNEL, fits)) == [
        Event("slot", tuple(fits))
    ]


async def test_the_workflow_functions_send_the_notices_this_module_defines(
    channel: Channel, conn: Any, db_dsn: str
) -> None:
    client = Client(conn)
    same_as_here = notices.enqueued("$1", "$2::text[]")

    first, sent = await channel.sent_by(client.enqueue("first"))
    assert first is not None
    assert events(sent) == [Event("enqueued", ("first",), top_priority=0)]
    # enqueue_steps (migration 0012) announces the steps that need not wait.
    _, sent = await channel.sent_by(client.enqueue_many([JobSpec("alone"), JobSpec("second", after=[first])]))
    assert sent == await channel.sql_sends(same_as_here, CHANNEL, ["alone"])
    assert events(sent) == [Event("enqueued", ("alone",))]

    # settle_children (migration 0012) announces the children that the success of their last parent released.
    backend = await PostgresBackend.open(db_dsn, pool_size=2)
    try:
        _, sent = await channel.sent_by(
            drain(Worker(backend, [Entrypoint("first", lambda job: None)], fast_settings()))
        )
    finally:
        await backend.close()
    assert sent == await channel.sql_sends(same_as_here, CHANNEL, ["second"])

    # ... and, when a parent ends otherwise, those that run anyway, and (by notify_ids, migration 0001) those
    # that someone waits for and that were canceled with it.
    parent, _ = await channel.sent_by(client.enqueue("parent"))
    assert parent is not None
    (_, dropped), _ = await channel.sent_by(
        client.enqueue_many(
            [JobSpec("anyway", after=[parent], on_parent_failure="run"), JobSpec("dropped", after=[parent])]
        )
    )
    assert dropped is not None
    await conn.execute("UPDATE pgqd_jobs SET notify_finished = true WHERE id = $1", dropped)  # as client.wait does
    _, sent = await channel.sent_by(client.cancel([parent]))
    announced = [payload for payload in sent if '"enqueued"' in payload]
    assert announced == await channel.sql_sends(same_as_here, CHANNEL, ["anyway"])
    assert Event("finished", ids=(dropped,)) in events(sent)
    assert None not in events(sent)

"""A small example app: the handlers and resources that config/example.toml wires up.

Run it with `scripts/run-example`, then feed it with `pgqd enqueue --config config/example.toml send_email
'{"to": "ada@example.com"}'` or `python -m examples.producer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pgqd import Context, Job, RetryLater


@dataclass
class Mailer:
    """Stands in for an SMTP or HTTP mail client that should be opened once per process, not once per job."""

    sent: int = 0
    opened_at: float = field(default_factory=time.monotonic)

    async def send(self, to: str, subject: str) -> str:
        await asyncio.sleep(0.05)  # the network round trip
        self.sent += 1
        return f"<{self.sent}.{int(self.opened_at)}@example.com>"


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[dict[str, Mailer]]:
    """Entered once in each worker process after it starts; what it yields is ctx.resources."""
    mailer = Mailer()
    try:
        yield {"mailer": mailer}
    finally:
        await asyncio.sleep(0)  # a real client would close its connections here


async def send_email(job: Job, ctx: Context) -> dict[str, str]:
    """Async, uses a shared resource, rate limited fleet-wide in the config, stores its result."""
    message = job.json() or {}
    to = message.get("to", "nobody@example.com")
    message_id = await ctx.resources["mailer"].send(to, message.get("subject", "Hello"))
    ctx.log.info("email sent", to=to, message_id=message_id)
    return {"message_id": message_id}


def resize_image(job: Job) -> None:
    """Blocking (CPU or file work): a plain def runs in the worker's thread pool, not on the event loop."""
    digest = hashlib.sha256(job.payload or b"")
    for _ in range(20_000):
        digest = hashlib.sha256(digest.digest())
    time.sleep(0.1)


async def flaky_webhook(job: Job) -> None:
    """Fails now and then; the config retries it with exponential backoff and holds it after the last try."""
    if random.random() < 0.5:
        raise ConnectionError("the partner's endpoint timed out")


async def poll_feed(job: Job) -> None:
    """Asks to be run again later when there is nothing to do yet."""
    if job.attempts < 3:
        raise RetryLater(2, "feed not updated yet")


async def nightly_report(job: Job, ctx: Context) -> None:
    """Scheduled by cron in the config; the job's headers carry the tick it runs for."""
    ctx.log.info("report built", tick=job.headers.get("pgqd-schedule-tick"))

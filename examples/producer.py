"""Enqueues a mix of example jobs and waits for one of them.

python -m examples.producer --config config/example.toml     # the example daemon's embedded database
python -m examples.producer --dsn postgresql://app@localhost/app
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta

import asyncpg

from pgqd import Client, JobSpec
from pgqd.cli.connect import add_connection_arguments, names_from, resolve_dsn


async def main(args: argparse.Namespace) -> None:
    names = names_from(args)
    conn = await asyncpg.connect(resolve_dsn(args))
    try:
        client = Client(conn, schema=names.schema, prefix=names.prefix)
        async with conn.transaction():
            # Jobs join the caller's transaction: they exist only if the business data commits too.
            ids = await client.enqueue_many(
                [JobSpec("send_email", {"to": f"user{n}@example.com", "subject": "Welcome"}) for n in range(20)]
                + [JobSpec("resize_image", f"image-{n}".encode()) for n in range(5)]
                + [JobSpec("flaky_webhook", {"event": n}) for n in range(5)]
                + [JobSpec("poll_feed", execute_after=timedelta(seconds=3))]
            )
        print(f"enqueued {len(ids)} jobs: ids {ids[0]}..{ids[-1]}")
        first = ids[0]
        assert first is not None
        result = await client.wait(first, timeout=60)
        print(f"job {first} finished: {result.status}, result {result.result}")
        await client.close()
    finally:
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_connection_arguments(parser)
    asyncio.run(main(parser.parse_args()))

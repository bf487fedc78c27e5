"""What the pause check costs the claim: the claim function of schema version 1 (no pause check) against the
current one, side by side in one database, interleaved.

    .venv/bin/python -m benchmarks.claim_cost [--claims 2000] [--runs 5]

Each round swaps the claim function in place (CREATE OR REPLACE from the migration's text), then times
``--claims`` claims of 10 jobs from a deep queue through the worker's own ``PostgresBackend.claim``, in three
states: the old function, the new one with nothing paused, and the new one with an unrelated entrypoint paused;
the order of the three rotates from round to round. It prints the median time per claim of each state.
"""

from __future__ import annotations

import re
import statistics
import time
from typing import Any

import asyncpg

from benchmarks.common import environment, fresh_database, parser, report, run_until_signalled
from pgqd import PostgresBackend
from pgqd.identifiers import Names
from pgqd.models import EntrypointLimit, WorkerInfo
from pgqd.sql import migrations

WARM_UP = 50
_CLAIM_FUNCTION = re.compile(r"CREATE (?:OR REPLACE )?FUNCTION \S+claim_jobs\".*?\n\$\$;\n", re.S)


def claim_functions() -> list[str]:
    """The claim function as each migration that defines it has it, oldest first, as CREATE OR REPLACE."""
    found = [_CLAIM_FUNCTION.search(m.sql) for m in migrations(Names())]
    return [f.group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1) for f in found if f is not None]


async def time_claims(backend: PostgresBackend, worker: int, claims: int) -> float:
    limits = [EntrypointLimit("noop")]
    started = time.perf_counter()
    for _ in range(claims):
        result = await backend.claim(worker, 10, limits)
        if len(result.jobs) != 10:
            raise RuntimeError("the queue ran dry: raise the job count")
    return (time.perf_counter() - started) / claims * 1e6


async def main() -> None:
    p = parser(__doc__ or "")
    p.set_defaults(runs=5)
    p.add_argument("--claims", type=int, default=2000)
    args = p.parse_args()
    states = ("version 1 claim", "nothing paused", "another entrypoint paused")
    timings: dict[str, list[float]] = {state: [] for state in states}
    async with fresh_database(args.server) as dsn:
        admin = await asyncpg.connect(dsn)
        jobs = (args.claims + WARM_UP) * 10 * len(states) * args.runs + 1000
        await admin.execute("INSERT INTO pgqd_jobs (entrypoint) SELECT 'noop' FROM generate_series(1, $1)", jobs)
        await admin.execute("VACUUM ANALYZE pgqd_jobs")
        backend = await PostgresBackend.open(dsn, pool_size=1)
        try:
            worker = await backend.register_worker(WorkerInfo("bench", 1, ["noop"]))
            definitions = claim_functions()
            old, new = definitions[0], definitions[-1]
            for run in range(args.runs):
                # The order rotates from round to round, so no state always runs on the emptier queue.
                for state in states[run % 3 :] + states[: run % 3]:
                    await admin.execute(old if state == states[0] else new)
                    await admin.execute("DELETE FROM pgqd_entrypoint_pauses")
                    if state == states[2]:
                        await admin.execute("INSERT INTO pgqd_entrypoint_pauses VALUES ('other', true)")
                    # A changed function invalidates cached plans: warm up before timing.
                    await time_claims(backend, worker, WARM_UP)
                    timings[state].append(await time_claims(backend, worker, args.claims))
        finally:
            await backend.close()
            await admin.close()
    baseline = statistics.median(timings[states[0]])
    results: list[dict[str, Any]] = [
        {
            "claim": state,
            "us_per_claim": round(statistics.median(runs), 1),
            "vs_version_1": round(statistics.median(runs) / baseline, 3),
            "runs": [round(r) for r in runs],
        }
        for state, runs in timings.items()
    ]
    report("claim cost of the pause check", results, await environment(args.server), args.json)


if __name__ == "__main__":
    run_until_signalled(main())

"""Where a drain's time goes: the CPU of pgqd's worker processes against that of their PostgreSQL backends,
and (with --py-spy) the functions a worker spends its samples in.

    .venv/bin/python -m benchmarks.profile_drain [--jobs 100000] [--processes 1] [--batch 100] [--py-spy [--native]]
        [--mix realistic|lifted|unlimited-only]

Drains pre-queued no-op jobs through the real daemon in its default configuration. CPU is read from /proc
for the worker processes and for the server processes serving this database, over the drain only; so it
needs the server on this machine. With --mix, the jobs are those of compare.py's realistic drain
(benchmarks/realistic.py): its mix with its limits, the same jobs with the limits lifted, or without the
limited entrypoints and their jobs; the drain ends when the unlimited entrypoints' jobs are done, and the CPU
per job is per job of those, so the three set side by side say what the limited entrypoints' jobs cost.

--py-spy needs py-spy on PATH or in the virtualenv (``pip install py-spy``) and the right to trace (root, or
ptrace allowed); it records one worker in the collapsed format and prints the functions with the most samples,
on their own and with what they call.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.common import environment, fresh_database, parser, report, run_until_signalled
from benchmarks.daemon import running_daemon
from benchmarks.drain import fill
from benchmarks.realistic import LOADS, MEASURED, drain_load
from benchmarks.runners.mix import RECORDS_ENV, Entrypoint
from benchmarks.scenarios import ENQUEUE_BATCH, settle, wait_until
from benchmarks.systems import SYSTEMS


@dataclass(frozen=True)
class Load:
    """What a profiled drain runs: jobs per entrypoint, the entrypoints served (None: the daemon's default), and
    the entrypoints whose jobs it waits for and rates."""

    counts: dict[str, int]
    mix: tuple[Entrypoint, ...] | None
    measured: list[str]


def load_of(mix: str | None, jobs: int) -> Load:
    if mix is None:
        return Load({"noop": jobs}, None, ["noop"])
    served, counts = drain_load(SYSTEMS["pgqd"], jobs, mix)
    return Load(counts, served, MEASURED)


FINISHED = "SELECT count(*) FROM pgqd_log WHERE entrypoint = ANY($1::text[])"
SPAN = """SELECT count(*) FILTER (WHERE entrypoint = ANY($1::text[])) AS measured, count(*) AS finished,
                 extract(epoch FROM max(finished_at) FILTER (WHERE entrypoint = ANY($1::text[]))
                                   - min(started_at) FILTER (WHERE entrypoint = ANY($1::text[]))) AS span
          FROM pgqd_log"""


async def fill_load(dsn: str, load: Load) -> None:
    if load.mix is None:
        await fill(dsn, load.counts["noop"])
        return
    await SYSTEMS["pgqd"].run(dsn, "fill_mix", counts=load.counts, batch=ENQUEUE_BATCH)
    await settle(dsn)


def stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # the fields after the command name, from the state on


def cpu_times(pids: list[int], *, system_only: bool = False) -> dict[int, float]:
    """User + system CPU seconds of each process still alive (with ``system_only``, the kernel's part)."""
    tick = os.sysconf("SC_CLK_TCK")
    times = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = stat_fields(pid)
            times[pid] = (int(fields[12]) + (0 if system_only else int(fields[11]))) / tick
    return times


def used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two readings; a process that appeared in between counts from its start."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
WAL_WRITER = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'"


def top_functions(collapsed: str, count: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Shares of all samples per function (lines merged): where the sample was taken (self), and anywhere on
    the stack (inclusive; the frames every sample shares, from the process's start, are left out)."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, weight = line.rpartition(" ")
        frames = [re.sub(r"\((?:.*/)?([^/:]+)(?::\d+)?\)$", r"(\1)", frame) for frame in stack.split(";")]
        n = int(weight)
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            anywhere[frame] += n
    share = 100.0 / max(samples, 1)
    return {
        "self": [(f, round(n * share, 1)) for f, n in own.most_common(count)],
        "inclusive": [(f, round(n * share, 1)) for f, n in anywhere.most_common() if n < 0.9 * samples][:count],
    }


COMMITS = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"


async def profile(
    server: str, load: Load, processes: int, batch: int, py_spy: str | None, native: bool, save: Path | None
) -> dict[str, Any]:
    wanted = sum(load.counts[name] for name in load.measured)
    async with fresh_database(server) as dsn, contextlib.AsyncExitStack() as stack:
        await fill_load(dsn, load)
        records = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "records"  # the limited jobs' runs
        conn = await asyncpg.connect(dsn)
        try:
            async with running_daemon(dsn, processes, batch, env={RECORDS_ENV: str(records)}, mix=load.mix):
                workers = [r["pid"] for r in await conn.fetch("SELECT pid FROM pgqd_workers")]
                supervisor = [int(stat_fields(workers[0])[1])]
                walwriter = [r["pid"] for r in await conn.fetch(WAL_WRITER)]
                groups = {"workers": workers, "supervisor": supervisor, "walwriter": walwriter}
                groups["backends"] = [r["pid"] for r in await conn.fetch(BACKENDS)]
                before = {name: cpu_times(pids) for name, pids in groups.items()}
                kernel_before = {name: cpu_times(groups[name], system_only=True) for name in ("workers", "backends")}
                commits_before = await conn.fetchval(COMMITS)
                began = asyncio.get_running_loop().time()
                recorder = None
                with tempfile.TemporaryDirectory() as folder:
                    out = Path(folder) / "worker.txt"
                    if py_spy:
                        recorder = subprocess.Popen(
                            [py_spy, "record", "--pid", str(workers[0]), "--format", "raw", "--rate", "200",
                             *(["--native"] if native else ["--nonblocking"]), "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                    if await wait_until(conn, FINISHED, wanted, 900, load.measured) < wanted:
                        raise TimeoutError("jobs not finished within 900s")
                    elapsed = asyncio.get_running_loop().time() - began
                    groups["backends"] = sorted({*groups["backends"], *(r["pid"] for r in await conn.fetch(BACKENDS))})
                    spent = {name: used(before[name], cpu_times(pids)) for name, pids in groups.items()}
                    kernel = {
                        name: used(kernel_before[name], cpu_times(groups[name], system_only=True))
                        for name in ("workers", "backends")
                    }
                    # Backends report their counts when idle (at most once a second): wait until they have.
                    await asyncio.sleep(1.5)
                    commits = await conn.fetchval(COMMITS) - commits_before
                    if recorder:
                        recorder.send_signal(2)  # py-spy writes its file on SIGINT
                        recorder.wait(30)
                    functions = top_functions(out.read_text()) if out.exists() else {}
                    if save and out.exists():
                        shutil.copyfile(out, save)
            measured, finished, span = await conn.fetchrow(SPAN, load.measured)
        finally:
            await conn.close()
    jobs = measured
    return {
        "jobs": jobs, "processes": processes, "batch": batch, "jobs_per_s": round(jobs / float(span)),
        "wall_s": round(elapsed, 2), "other_jobs": finished - measured,
        **{f"{name}_cpu_s": round(seconds, 2) for name, seconds in spent.items()},
        **{f"{name}_us_per_job": round(seconds / jobs * 1e6, 1) for name, seconds in spent.items()},
        # The kernel's share (system time: socket writes and reads, waking the other side, epoll).
        **{f"{name}_kernel_share": round(kernel[name] / spent[name], 2) if spent[name] else 0.0 for name in kernel},
        "transactions_per_100_jobs": round(commits / jobs * 100, 1),
        "functions": functions,
    }  # fmt: skip


def find_py_spy() -> str | None:
    """py-spy on PATH, or beside this Python (in the virtualenv)."""
    beside_python = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside_python) if beside_python.exists() else None)


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--py-spy", action="store_true", help="also sample one worker with py-spy")
    p.add_argument("--save", type=Path, help="with --py-spy: keep the collapsed stacks in this file")
    p.add_argument("--native", action="store_true", help="with --py-spy: C frames too (pauses the worker per sample)")
    p.add_argument("--mix", choices=LOADS, help="the realistic drain's jobs, with its limits, lifted, or without")
    args = p.parse_args()
    py_spy = None
    if args.py_spy:
        py_spy = find_py_spy()
        if py_spy is None:
            p.error("--py-spy: py-spy is neither on PATH nor in this virtualenv (.venv/bin/pip install py-spy)")
    load = load_of(args.mix, args.jobs)
    result = await profile(args.server, load, args.processes, args.batch, py_spy, args.native, args.save)
    functions = result.pop("functions")
    report("drain profile", [result], await environment(args.server), args.json)
    for kind, rows in functions.items():
        print(f"\n{kind} (% of samples):")
        for name, share in rows:
            print(f"  {share:5.1f}  {name}")


if __name__ == "__main__":
    run_until_signalled(main())

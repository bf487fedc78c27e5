"""``pgqd mcp``: read-only MCP tools over stdio, for AI assistants looking at a queue (needs the ``mcp`` extra).

Every tool is one read-side query of ``pgqd.ops.stats`` (the ones the dashboards use) and returns JSON. Nothing here
changes the queue: there is no tool to enqueue, cancel, requeue, pause or resume.
"""

from __future__ import annotations

import binascii
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, fields, is_dataclass
from datetime import datetime
from typing import Any

import asyncpg
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from pgqd import __version__
from pgqd.backend.bounded import BoundedPool, DatabaseHealth, DatabaseTimeouts
from pgqd.backend.statement_bounds import StatementBounds, no_answer, timed_out
from pgqd.identifiers import Names
from pgqd.models import FINAL_STATUSES
from pgqd.ops.history import SPANS, STATUS_GROUPS, JobHistory
from pgqd.ops.stats import READ_SIDE_SETTINGS, QueueStats
from pgqd.ops.workflows import WorkflowReads, links_as_dict, workflow_as_dict

# Payloads can be large and are untrusted: a tool shows at most this many bytes of one.
PAYLOAD_PREVIEW_BYTES = 4096
MAX_ROWS = 500
CONNECT_TIMEOUT = 10.0
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

INSTRUCTIONS = (
    "Read-only views of a pgqd job queue on PostgreSQL: per entrypoint how many jobs wait, run or are held after "
    "failing and how old the oldest waiting job is; jobs finished per minute; held and recently failed jobs; one "
    "job in full; worker processes; cron schedules; paused entrypoints; per entrypoint over the last hour, day or "
    "week, jobs finished and percentiles of run time and queue wait; running jobs with their worker. Times are UTC "
    "ISO 8601, ages and durations in seconds."
)


def plain(value: Any) -> Any:
    """A JSON-ready copy: dataclasses as dicts, times as ISO strings, sets as sorted lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(plain(v) for v in value)
    if isinstance(value, bytes):
        return describe_payload(value)
    return value


def describe_payload(payload: bytes | None) -> dict[str, Any] | None:
    """How a payload is shown: parsed JSON, else UTF-8 text, else a hex preview; cut at PAYLOAD_PREVIEW_BYTES."""
    if payload is None:
        return None
    shown = payload[:PAYLOAD_PREVIEW_BYTES]
    described: dict[str, Any] = {"bytes": len(payload), "truncated": len(payload) > len(shown)}
    try:
        text = shown.decode("utf-8")
    except UnicodeDecodeError:
        described["hex"] = binascii.hexlify(shown).decode()
        return described
    if not described["truncated"]:
        try:
            described["json"] = json.loads(text)
            return described
        except ValueError:
            pass
    described["text"] = text
    return described


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_ROWS:
        raise ToolError(f"limit must be between 1 and {MAX_ROWS}, got {limit}")
    return limit


def _minutes(name: str, minutes: float) -> float:
    if not 0 < minutes <= 60 * 24 * 31:
        raise ToolError(f"{name} must be more than 0 and at most 44640 minutes (31 days), got {minutes}")
    return minutes * 60.0


ToolFunction = Callable[..., Awaitable[dict[str, Any]]]


def _read_only_tool(server: MCPServer[Any], db_timeout: float) -> Callable[[ToolFunction], ToolFunction]:
    """Registers a read-only tool whose database trouble reaches the caller as a tool error that says what it is:
    the SDK would show any other exception as "Error executing tool" and nothing more."""

    def register(tool: ToolFunction) -> ToolFunction:
        @functools.wraps(tool)
        async def answered(*args: Any, **kwargs: Any) -> dict[str, Any]:
            try:
                return await tool(*args, **kwargs)
            except ToolError:
                raise
            except Exception as exc:
                if db_timeout and timed_out(exc):
                    raise ToolError(no_answer(exc, db_timeout)) from None
                if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
                    raise ToolError(f"database error: {type(exc).__name__}: {exc}") from None
                raise

        server.tool(annotations=READ_ONLY)(answered)
        return answered

    return register


def build_server(stats: QueueStats, db_timeout: float = 0.0) -> MCPServer[Any]:
    """The MCP server with its tools, reading through ``stats`` (whose statements are bounded by ``db_timeout``
    seconds, 0 for none)."""
    server: MCPServer[Any] = MCPServer("pgqd", version=__version__, instructions=INSTRUCTIONS)
    tool = _read_only_tool(server, db_timeout)

    @tool
    async def queue_depth() -> dict[str, Any]:
        """Per entrypoint: jobs queued (eligible now), deferred (waiting for their time), waiting (for their
        parents in a workflow), running, and held (failed, waiting for an operator); the age in seconds of the
        job that has waited longest since it became eligible; and whether the entrypoint is paused."""
        queues = await stats.queues()
        return {"entrypoints": [{**asdict(q), "oldest_eligible_age": q.oldest_eligible_age} for q in queues]}

    @tool
    async def throughput(
        window_minutes: float = 60, bucket_minutes: float = 5, entrypoint: str | None = None
    ) -> dict[str, Any]:
        """Jobs finished over the last window_minutes, per entrypoint: succeeded, failed (an exception or a
        timeout) and other (canceled or deleted), in total and in buckets of bucket_minutes (oldest first;
        buckets with nothing finished are left out). Optionally for one entrypoint only."""
        window, bucket = _minutes("window_minutes", window_minutes), _minutes("bucket_minutes", bucket_minutes)
        series = await stats.throughput_series(window, bucket, entrypoint)
        totals: dict[str, dict[str, int]] = {}
        for b in series:
            total = totals.setdefault(b.entrypoint, {"succeeded": 0, "failed": 0, "other": 0})
            total["succeeded"] += b.succeeded
            total["failed"] += b.failed
            total["other"] += b.other
        return {
            "window_minutes": window_minutes,
            "bucket_minutes": bucket_minutes,
            "totals": totals,
            "buckets": plain(series),
        }

    @tool
    async def failed_jobs(entrypoint: str | None = None, window_minutes: float = 60, limit: int = 20) -> dict[str, Any]:
        """Jobs held after failing (they wait for an operator to requeue them), oldest first, with their last
        error; and runs that ended in an exception or a timeout in the last window_minutes, newest first. At
        most limit of each; optionally for one entrypoint only."""
        window = _minutes("window_minutes", window_minutes)
        held = await stats.held_jobs(entrypoint, limit=_limit(limit))
        recent = await stats.recent_failures(window, entrypoint, limit)
        return {"held": plain(held), "recent_failures": plain(recent)}

    @tool
    async def job_detail(job_id: int) -> dict[str, Any]:
        """One job by id, live or finished: status, entrypoint, priority, attempts, payload (parsed JSON, text or
        a hex preview; a finished job has one only if its entrypoint keeps payloads), headers, timeline (created,
        due, started, finished), worker, last or final error with its traceback, and the result of a finished
        job."""
        job = await stats.job(job_id)
        if job is None:
            raise ToolError(f"no job {job_id}: it never existed, or it finished and was pruned from the log")
        return plain(job)  # type: ignore[no-any-return]

    @tool
    async def workflow(workflow_id: int | None = None, job_id: int | None = None) -> dict[str, Any]:
        """A workflow (jobs that wait for other jobs), by its id or by the id of one of its jobs: every step with
        its job id, step name, entrypoint, status, the job ids it waits for and its depth (layer), plus counts
        per status. Given a job_id, also that job's parents and children (a job enqueued with after= but in no
        workflow has those only)."""
        reads = WorkflowReads(stats.db, stats.names)
        found: dict[str, Any] = {}
        if job_id is not None:
            links = await reads.links(job_id)
            found["job"] = {"id": job_id, **links_as_dict(links)}
            workflow_id = workflow_id or links.workflow_id
        if workflow_id is None:
            if job_id is None:
                raise ToolError("give workflow_id or job_id")
            return found
        view = await reads.workflow(workflow_id)
        if view is None:
            raise ToolError(f"no workflow {workflow_id}: it never existed, or retention removed it")
        found["workflow"] = workflow_as_dict(view)
        return found

    @tool
    async def workers() -> dict[str, Any]:
        """Worker processes alive now: host, pid, entrypoints served, start time, last heartbeat (and seconds
        since), and jobs running."""
        return {"workers": plain(await stats.workers())}

    @tool
    async def schedules() -> dict[str, Any]:
        """Cron schedules: name, cron expression, time zone, entrypoint, enabled, next and last run, and the
        status of the job the last run enqueued."""
        return {"schedules": plain(await stats.schedules())}

    @tool
    async def history(period: str = "1h", entrypoint: str | None = None, status: str | None = None) -> dict[str, Any]:
        """Per entrypoint, the jobs that finished over the last period ("1h", "24h" or "7d"): succeeded, failed
        (an exception or a timeout) and other (canceled or deleted), and the p50, p95 and p99 in seconds of
        their run time (finished - started) and queue wait (started - due), each within 9 %. Optionally for one
        entrypoint and one final status ("failed" for exceptions and timeouts). A day or a week is read from the
        hourly rollup that a running daemon keeps."""
        if period not in SPANS:
            raise ToolError(f"period must be one of {', '.join(SPANS)}")
        if status is not None and status not in (*STATUS_GROUPS, *FINAL_STATUSES):
            raise ToolError(f"status must be one of {', '.join((*STATUS_GROUPS, *FINAL_STATUSES))}")
        found = await JobHistory(stats.db, stats.names).history(SPANS[period], entrypoint, status)
        return {
            "period": period,
            "from": plain(found.start),
            "until": plain(found.end),
            "entrypoints": plain(found.entrypoints),
            "rolled_at": plain(found.rolled_at),
        }

    @tool
    async def running_jobs(entrypoint: str | None = None, limit: int = 50) -> dict[str, Any]:
        """Jobs running now, longest-running first: id, entrypoint, attempts, when picked, seconds running, and
        the worker process (host, pid) that runs each. Optionally for one entrypoint only."""
        return {"running": plain(await JobHistory(stats.db, stats.names).running(entrypoint, _limit(limit)))}

    @tool
    async def paused_entrypoints() -> dict[str, Any]:
        """Which entrypoints are paused fleet-wide (workers claim none of their jobs): all_paused is true after
        `pgqd pause --all`, with excepted listing entrypoints resumed since; otherwise paused lists them."""
        return (await stats.pauses()).as_dict()

    return server


async def serve(dsn: str | None, names: Names, db_timeout: float = 0.0) -> None:
    """Serves the tools on stdin/stdout until the client closes them (``pgqd mcp`` has checked the database).
    ``db_timeout``: the longest wait for each answer of the database, after which a tool call fails (0: none)."""
    pool = await _open_pool(dsn, db_timeout)
    try:
        await build_server(QueueStats(pool, names, read_side=True), db_timeout).run_stdio_async()
    finally:
        await pool.close()


async def _open_pool(dsn: str | None, db_timeout: float) -> Any:
    """Two connections for the tools' statements, each answered within ``db_timeout`` seconds (0: no limit)."""
    bounds = StatementBounds(db_timeout)
    options: dict[str, Any] = {
        "server_settings": {"application_name": "pgqd-mcp", **READ_SIDE_SETTINGS, **bounds.server_settings},
        "command_timeout": bounds.client_timeout,
        "timeout": CONNECT_TIMEOUT,
    }
    if bounds.client_timeout is None:
        return await asyncpg.create_pool(dsn, min_size=1, max_size=2, **options)
    # The daemon's bounded pool: a statement left without an answer closes its connection at once. asyncpg's pool
    # first waits for the cancel of that statement to be answered, on what may be a dead socket: on a server that
    # stopped answering, a tool call with a 1 s bound took 6 s, and the next one 10 s more.
    timeouts = DatabaseTimeouts(command=bounds.client_timeout, connect=CONNECT_TIMEOUT)
    return await BoundedPool.open(dsn, 2, timeouts, DatabaseHealth(), **options)

"""The supervisor: a plain pre-fork process manager with one loop and one signal at a time.

Signal handlers only queue the signal and wake the loop through a self-pipe. Each turn of the loop handles at
most one signal (``handle_term``, ``handle_hup``, ...), reads the workers' check-ins, then always does the same
three things: kill workers that stopped checking in, reap the dead ones (rescuing their jobs), and spawn up to
the wanted number.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from pgqd.backend.postgres import PostgresBackend
from pgqd.config.load import ConfigProblems, import_handlers, load_config
from pgqd.config.model import Config
from pgqd.daemon.health import Endpoints, SupervisorView
from pgqd.daemon.metrics import mark_process_dead
from pgqd.daemon.runtime import build_entrypoints, build_schedules, database_timeouts, names, worker_settings
from pgqd.daemon.systemd import Notifier
from pgqd.daemon.worker_main import WorkerPlan, worker_main
from pgqd.errors import ConfigError, PgqdError

log = structlog.get_logger("pgqd.daemon.supervisor")

CRASH_WINDOW = 60.0
CRASH_LIMIT = 5
STOP_MARGIN = 5.0
_HANDLED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGCHLD")


@dataclass
class Child:
    """The supervisor's record of one forked worker process: its pipe, its last check-in, its drain state."""

    pid: int
    generation: int
    checkin_fd: int
    started: float
    last_beat: float
    db_id: int = 0
    jobs: int = 0
    retiring: bool = False
    runs_scheduler: bool = False
    draining: bool = False
    reason: str = ""
    # When a draining worker must be gone; past it, it is killed and its jobs rescued.
    deadline: float | None = None
    killed: bool = False
    pending: bytes = b""


@dataclass
class SupervisorState:
    wanted: int
    generation: int = 0
    crashes: list[float] = field(default_factory=list)
    next_spawn_at: float = 0.0
    stopping: bool = False
    exit_code: int = 0
    restarts: dict[str, int] = field(default_factory=dict)
    rescued: int = 0


class Supervisor:
    def __init__(
        self,
        config: Config,
        handlers: dict[str, Any],
        dsn: str | None,
        *,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
        metrics_dir: str | None = None,
    ) -> None:
        self.config = config
        self.handlers = handlers
        self.dsn = dsn
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.workers: dict[int, Child] = {}
        self.state = SupervisorState(wanted=config.workers.processes)
        self.signals: list[int] = []
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._previous_handlers: dict[int, Any] = {}
        self.metrics_dir = metrics_dir
        self.endpoints: Endpoints | None = None
        if config.metrics.enabled:
            try:
                self.endpoints = Endpoints(config.metrics.listen, dsn, names(config), metrics_dir, self.view)
            except OSError as exc:
                raise PgqdError(f"[metrics] listen: cannot serve on {config.metrics.listen}: {exc.strerror}") from None

    def view(self) -> SupervisorView:
        active = self._active()
        return SupervisorView(
            running=len(active),
            wanted=self.state.wanted,
            checked_in=sum(1 for w in active if w.db_id),
            stopping=self.state.stopping,
            restarts=dict(self.state.restarts),
            rescued=self.state.rescued,
        )

    # --- the loop ------------------------------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        try:
            self._spawn_missing()
            self.notifier.ready(self._status())
            log.info("supervisor ready", workers=len(self.workers), pid=os.getpid())
            while self.workers or not self.state.stopping:
                self._sleep()
                if self.signals:
                    self._dispatch(self.signals.pop(0))
                self._read_checkins()
                self._kill_silent()
                self._reap()
                if not self.state.stopping:
                    self._recycle()
                    self._spawn_missing()
                self._watchdog()
            return self.state.exit_code
        finally:
            self._restore_signals()
            self.notifier.close()
            if self.endpoints is not None:
                self.endpoints.server.close()

    def _sleep(self) -> None:
        fds = [self._wake_r, *(w.checkin_fd for w in self.workers.values())]
        if self.endpoints is not None:
            fds += self.endpoints.server.filenos()
        timeout = 1.0
        if self.notifier.watchdog_interval is not None:
            timeout = min(timeout, self.notifier.watchdog_interval / 2)
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        if self.endpoints is not None:
            self.endpoints.server.handle(set(ready))
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def _dispatch(self, signum: int) -> None:
        name = signal.Signals(signum).name
        handler: Callable[[], None] | None = getattr(self, f"handle_{name[3:].lower()}", None)
        if handler is not None:
            handler()

    # --- signals -------------------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        for name in _HANDLED:
            signum = getattr(signal, name)
            self._previous_handlers[signum] = signal.signal(signum, self._queue_signal)

    def _restore_signals(self) -> None:
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous)

    def _queue_signal(self, signum: int, _frame: Any) -> None:
        if signum != signal.SIGCHLD and len(self.signals) < 16:
            self.signals.append(signum)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b".")

    def handle_term(self) -> None:
        if self.state.stopping:
            log.warning("second stop signal: stopping now, releasing running jobs")
            soon = time.monotonic() + STOP_MARGIN
            for worker in self.workers.values():
                worker.deadline = min(worker.deadline or soon, soon)
            self._signal_all(signal.SIGTERM)
            return
        log.info("stopping: draining workers", grace=self.config.workers.shutdown_timeout)
        self.notifier.stopping(f"draining {len(self.workers)} workers")
        self.state.stopping = True
        for worker in self.workers.values():
            self._drain(worker, "stop")

    handle_int = handle_term

    def handle_hup(self) -> None:
        if self.config_path is None:
            log.warning("reload requested but the config was not read from a file")
            return
        self.notifier.reloading()
        try:
            config = load_config(self.config_path)
            handlers = import_handlers(config)
        except ConfigError as exc:
            log.error("reload refused: the new config is invalid; running on the old one", error=str(exc))
            self.notifier.ready(self._status())
            return
        if config.database != self.config.database:
            log.warning("reload: [database] changes need a restart; keeping the old database settings")
            config = replace(config, database=self.config.database)
        log.info("reloaded config: starting new workers, draining old ones", path=str(self.config_path))
        self.config, self.handlers = config, handlers
        self.state.generation += 1
        self.state.wanted = config.workers.processes
        for worker in self.workers.values():
            self._drain(worker, "reload")
        self._spawn_missing()
        self.notifier.ready(self._status())

    def handle_ttin(self) -> None:
        self.state.wanted += 1
        log.info("one worker more", wanted=self.state.wanted)

    def handle_ttou(self) -> None:
        if self.state.wanted <= 1:
            return
        self.state.wanted -= 1
        log.info("one worker fewer", wanted=self.state.wanted)
        active = [w for w in self.workers.values() if not w.draining]
        if len(active) > self.state.wanted:
            self._drain(max(active, key=lambda w: w.started), "scale down")

    # --- workers -------------------------------------------------------------------------------------------
    def _active(self) -> list[Child]:
        return [w for w in self.workers.values() if not w.draining]

    def _spawn_missing(self) -> None:
        now = time.monotonic()
        while len(self._active()) < self.state.wanted and now >= self.state.next_spawn_at:
            self._spawn()

    def _plan(self, checkin_fd: int, runs_scheduler: bool) -> WorkerPlan:
        config = self.config
        limit = config.workers.max_jobs_per_worker
        # Jitter spreads the recycling of workers started together, so they never all restart at once.
        max_jobs = int(limit * random.uniform(1.0, 1.1)) if limit else 0
        return WorkerPlan(
            dsn=self.dsn,
            names=names(config),
            pool_size=config.database.pool_size,
            entrypoints=build_entrypoints(config, self.handlers),
            settings=replace(worker_settings(config), max_jobs=max_jobs),
            resources=config.workers.resources,
            checkin_fd=checkin_fd,
            beat_every=min(1.0, config.workers.worker_timeout / 4),
            schedules=build_schedules(config) if runs_scheduler else (),
            metrics_dir=self.metrics_dir,
            timeouts=database_timeouts(config),
        )

    def _spawn(self) -> None:
        read_fd, write_fd = os.pipe()
        # One worker per daemon fires the schedules: the first one started while none of the others does.
        runs_scheduler = not any(w.runs_scheduler for w in self._active())
        plan = self._plan(write_fd, runs_scheduler)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read_fd)
                os.set_blocking(write_fd, False)
                self._close_in_child()
                code = worker_main(plan)
            finally:
                os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        now = time.monotonic()
        self.workers[pid] = Child(pid, self.state.generation, read_fd, now, now, runs_scheduler=runs_scheduler)
        log.info("worker started", worker_pid=pid, generation=self.state.generation)

    def _close_in_child(self) -> None:
        if self.endpoints is not None:
            self.endpoints.server.close()
        for fd in (self._wake_r, self._wake_w, *(w.checkin_fd for w in self.workers.values())):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.workers.clear()
        self._restore_signals()

    def _drain(self, worker: Child, reason: str) -> None:
        if worker.draining:
            return
        worker.draining = True
        worker.reason = reason
        worker.deadline = time.monotonic() + self.config.workers.shutdown_timeout + STOP_MARGIN
        self._kill(worker.pid, signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for pid in list(self.workers):
            self._kill(pid, signum)

    def _kill(self, pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def _read_checkins(self) -> None:
        now = time.monotonic()
        for worker in self.workers.values():
            try:
                data = os.read(worker.checkin_fd, 65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    log.warning("check-in pipe failed", worker_pid=worker.pid, error=str(exc))
                continue
            if not data:
                continue
            lines = (worker.pending + data).split(b"\n")
            worker.pending = lines.pop()
            for line in lines:
                parts = line.split()
                if len(parts) == 4 and parts[0] == b"beat":
                    worker.db_id, worker.jobs, worker.retiring = int(parts[1]), int(parts[2]), parts[3] == b"1"
                    worker.last_beat = now

    def _kill_silent(self) -> None:
        """SIGKILLs workers whose event loop stopped checking in, and draining workers past their deadline."""
        timeout = self.config.workers.worker_timeout
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.killed:
                continue
            if now - worker.last_beat > timeout:
                log.error(
                    "worker stopped checking in (blocked event loop?): killing it",
                    worker_pid=worker.pid,
                    silent_for=round(now - worker.last_beat, 1),
                )
                worker.reason = worker.reason if worker.draining else "timeout"
            elif worker.deadline is not None and now > worker.deadline:
                log.error("worker did not stop in time: killing it", worker_pid=worker.pid)
            else:
                continue
            worker.killed = True
            self._kill(worker.pid, signal.SIGKILL)

    def _recycle(self) -> None:
        """Replaces workers that spent their job budget (they stopped claiming and asked) or grew too large
        (one at a time, as that one is still serving)."""
        limit_mb = self.config.workers.max_memory_mb
        recycling = any(w.reason == "recycle" for w in self.workers.values())
        for worker in self._active():
            if worker.retiring:
                why = f"ran {worker.jobs} jobs"
            elif limit_mb and not recycling and (rss := _rss_mb(worker.pid)) > limit_mb:
                why = f"uses {rss:.0f} MiB"
            else:
                continue
            log.info("recycling worker", worker_pid=worker.pid, why=why)
            # Start the replacement first, so capacity never dips.
            self.state.next_spawn_at = 0.0
            self.state.wanted += 1
            self._spawn_missing()
            self.state.wanted -= 1
            self._drain(worker, "recycle")
            return

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue  # e.g. the embedded server's helper processes
            os.close(worker.checkin_fd)
            if self.metrics_dir:
                mark_process_dead(pid, self.metrics_dir)
            code = os.waitstatus_to_exitcode(status)
            self._after_exit(worker, code)

    def _after_exit(self, worker: Child, code: int) -> None:
        planned = worker.draining and worker.reason in ("stop", "reload", "recycle", "scale down") and code == 0
        reason_key = worker.reason or ("exit" if code == 0 else "crash" if code > 0 else "killed")
        self.state.restarts[reason_key] = self.state.restarts.get(reason_key, 0) + 1
        if worker.db_id:
            rescued = _rescue(self.dsn, self.config, worker.db_id)
            self.state.rescued += len(rescued)
            if rescued:
                log.warning("rescued the jobs of a dead worker", worker_pid=worker.pid, job_ids=rescued[:20])
        if planned:
            log.info("worker exited", worker_pid=worker.pid, reason=worker.reason)
            return
        log.error("worker died", worker_pid=worker.pid, exit_code=code, reason=reason_key)
        if self.state.stopping:
            return
        now = time.monotonic()
        # A crash loop is workers failing by themselves: dying before they ever served, or exiting with an
        # error. A serving worker killed from outside (an operator, a kill drill) is replaced at once and does
        # not count, or a run of such kills would take the whole daemon down.
        if worker.db_id and code < 0 and worker.reason != "timeout":
            self.state.next_spawn_at = now
            return
        self.state.crashes = [t for t in self.state.crashes if now - t < CRASH_WINDOW] + [now]
        if len(self.state.crashes) >= CRASH_LIMIT:
            log.critical(
                "workers are crashing in a loop: giving up",
                crashes=len(self.state.crashes),
                window=CRASH_WINDOW,
            )
            self.state.exit_code = 1
            self.handle_term()
            return
        delay = min(0.5 * 2 ** (len(self.state.crashes) - 1), 10.0)
        self.state.next_spawn_at = now + delay

    def _watchdog(self) -> None:
        now = time.monotonic()
        if self.notifier.watchdog_due(now):
            self.notifier.watchdog(now)

    def _status(self) -> str:
        return f"{len(self._active())} workers running, {len(self.config.entrypoints)} entrypoints"


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _rescue(dsn: str | None, config: Config, worker_id: int) -> list[int]:
    """Requeues a dead worker's jobs at once, on a short-lived connection (no event loop outlives it)."""

    async def rescue() -> list[int]:
        backend = await PostgresBackend.open(dsn, names(config), pool_size=1, application_name="pgqd-supervisor")
        try:
            return await backend.rescue_worker(worker_id)
        finally:
            await backend.close()

    try:
        return asyncio.run(asyncio.wait_for(rescue(), 10.0))
    except (PgqdError, OSError, TimeoutError) as exc:
        # The others' stale-heartbeat rescue will pick these jobs up after worker_timeout.
        log.warning("could not rescue a dead worker's jobs now", worker_id=worker_id, error=str(exc))
        return []


__all__ = ["ConfigProblems", "Supervisor"]

"""The supervisor: a plain pre-fork process manager with one loop and one signal at a time.

Signal handlers only queue the signal and wake the loop through a self-pipe. Each turn of the loop handles at
most one signal (``handle_term``, ``handle_hup``, ...), reads the workers' check-ins, then always does the same
three things: kill workers that stopped checking in, reap the dead ones (handing the rescue of their jobs to a
child process), and spawn up to the wanted number.

The loop does no database I/O and blocks on nothing but its ``select``: the rescue runs in a child
(``rescue.py``), queue gauges are collected by a worker, and /readyz judges the database by the workers'
check-ins. An unexpected exception ends the loop: the workers are stopped gracefully and the daemon exits 1.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from pgqd.config.load import import_handlers, load_config
from pgqd.config.model import Config
from pgqd.daemon.metrics import mark_process_dead
from pgqd.daemon.supervisor.children import Child, stop_processes
from pgqd.daemon.supervisor.deaths import CRASH_WINDOW, CrashGuard, Verdict, exit_cause, judge
from pgqd.daemon.supervisor.health import Endpoints, SupervisorView
from pgqd.daemon.supervisor.rescue import Rescuer, RescueReport
from pgqd.daemon.supervisor.runtime import names, worker_plan
from pgqd.daemon.supervisor.systemd import Notifier
from pgqd.daemon.worker.main import worker_main
from pgqd.errors import ConfigError, PgqdError

log = structlog.get_logger("pgqd.daemon.supervisor.main")

STOP_MARGIN = 5.0
_HANDLED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGCHLD")


@dataclass
class SupervisorState:
    wanted: int
    generation: int = 0
    guard: CrashGuard = field(default_factory=CrashGuard)
    next_spawn_at: float = 0.0
    stopping: bool = False
    exit_code: int = 0
    restarts: dict[str, int] = field(default_factory=dict)
    rescued: int = 0
    # Deaths of registered workers that were idle at their last check-in, judged once their rescue tells
    # whether they held jobs: database worker id -> worker pid.
    unjudged: dict[int, int] = field(default_factory=dict)


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
        self.rescuer = Rescuer(dsn, names(config), self._close_in_child)
        self.endpoints: Endpoints | None = None
        if config.metrics.enabled:
            try:
                self.endpoints = Endpoints(config.metrics.listen, metrics_dir, self.view)
            except OSError as exc:
                raise PgqdError(f"[metrics] listen: cannot serve on {config.metrics.listen}: {exc.strerror}") from None

    def view(self) -> SupervisorView:
        active = self._active()
        seen = [w.db_seen_at for w in active if w.db_seen_at is not None]
        return SupervisorView(
            running=len(active),
            wanted=self.state.wanted,
            checked_in=sum(1 for w in active if w.db_id),
            stopping=self.state.stopping,
            restarts=dict(self.state.restarts),
            rescued=self.state.rescued,
            database_silent_for=time.monotonic() - max(seen) if seen else None,
            database_bound=self.config.workers.worker_timeout / 2,
        )

    # --- the loop ------------------------------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        try:
            try:
                self._serve()
            except Exception:
                log.exception("supervisor failed: stopping the workers")
                self.state.exit_code = 1
                self._stop_after_failure()
            return self.state.exit_code
        finally:
            self._restore_signals()
            self.notifier.close()
            if self.endpoints is not None:
                self.endpoints.server.close()

    def _serve(self) -> None:
        self._spawn_missing()
        self.notifier.ready(self._status())
        log.info("supervisor ready", workers=len(self.workers), pid=os.getpid())
        while self.workers or self.rescuer.busy or not self.state.stopping:
            self._sleep()
            if self.signals:
                self._dispatch(self.signals.pop(0))
            self._read_check_ins()
            self._kill_silent()
            self._reap()
            self._rescue()
            if not self.state.stopping:
                self._recycle()
                self._spawn_missing()
            self._watchdog()

    def _sleep(self) -> None:
        fds = [self._wake_r, *(w.check_in_fd for w in self.workers.values())]
        if self.endpoints is not None:
            fds += self.endpoints.server.filenos()
        try:
            ready, _, _ = select.select(fds, [], [], self._timeout())
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

    def _timeout(self) -> float:
        """Until the next thing the loop must do on its own: at most a second, less when a spawn, a rescue
        or a watchdog ping falls due sooner."""
        now = time.monotonic()
        due = [now + 1.0]
        if self.notifier.watchdog_interval is not None:
            due.append(now + self.notifier.watchdog_interval / 2)
        if not self.state.stopping and len(self._active()) < self.state.wanted:
            due.append(self.state.next_spawn_at)
        if (rescue_due := self.rescuer.next_due()) is not None:
            due.append(rescue_due)
        return max(min(due) - now, 0.0)

    def _dispatch(self, signum: int) -> None:
        name = signal.Signals(signum).name
        handler: Callable[[], None] | None = getattr(self, f"handle_{name[3:].lower()}", None)
        if handler is not None:
            handler()

    def _stop_after_failure(self) -> None:
        """Stops the workers after the loop failed, without the loop. Their own drain releases their jobs."""
        self.state.stopping = True
        self.notifier.stopping("supervisor failed: stopping the workers")
        grace = self.config.workers.shutdown_timeout + STOP_MARGIN
        stop_processes(set(self.workers), set(self.rescuer.pids()), grace, STOP_MARGIN)

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
        self.rescuer.drop_retries()
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

    def _spawn(self) -> None:
        read_fd, write_fd = os.pipe()
        # One worker per daemon fires the schedules and collects the queue gauges: the first one started while
        # none of the others does.
        lead = not any(w.lead for w in self._active())
        plan = worker_plan(
            self.config,
            self.handlers,
            self.dsn,
            write_fd,
            self.metrics_dir,
            lead=lead,
            queue_gauges=self.endpoints is not None,
        )
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
        self.workers[pid] = Child(pid, self.state.generation, read_fd, now, now, lead=lead)
        log.info("worker started", worker_pid=pid, generation=self.state.generation)

    def _close_in_child(self) -> None:
        if self.endpoints is not None:
            self.endpoints.server.close()
        for fd in (self._wake_r, self._wake_w, *(w.check_in_fd for w in self.workers.values())):
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

    def _read_check_ins(self) -> None:
        for worker in self.workers.values():
            worker.read_check_ins()

    def _kill_silent(self) -> None:
        """SIGKILLs workers whose event loop stopped checking in, and draining workers past their deadline."""
        timeout = self.config.workers.worker_timeout
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.killed:
                continue
            silent_for = now - worker.last_check_in
            if silent_for > timeout:
                log.error(
                    "worker stopped checking in (blocked event loop?): killing it",
                    worker_pid=worker.pid,
                    silent_for=round(silent_for, 1),
                )
                worker.reason = worker.reason if worker.draining else "timeout"
                worker.killed = f"killed for not checking in: event loop blocked for {silent_for:.0f}s"
            elif worker.deadline is not None and now > worker.deadline:
                log.error("worker did not stop in time: killing it", worker_pid=worker.pid)
                worker.killed = "killed for not stopping within shutdown_timeout"
            else:
                continue
            self._kill(worker.pid, signal.SIGKILL)

    def _recycle(self) -> None:
        """Replaces workers that spent their job budget (they stopped claiming and asked) or grew too large
        (one at a time, as that one is still serving)."""
        limit_mb = self.config.workers.max_memory_mb
        recycling = any(w.reason == "recycle" for w in self.workers.values())
        for worker in self._active():
            if worker.retiring:
                why = f"ran {worker.jobs} jobs"
            elif limit_mb and not recycling and (rss := worker.rss_mb()) > limit_mb:
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
            if self.rescuer.owns(pid):
                report = self.rescuer.reaped(pid, status, time.monotonic())
                if report is not None:
                    self._rescue_reported(report)
                continue
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue  # e.g. the embedded server's helper processes
            worker.read_check_ins()  # its last words, written before it died
            os.close(worker.check_in_fd)
            if self.metrics_dir:
                mark_process_dead(pid, self.metrics_dir)
            self._after_exit(worker, os.waitstatus_to_exitcode(status))

    def _after_exit(self, worker: Child, code: int) -> None:
        planned = worker.draining and worker.reason in ("stop", "reload", "recycle", "scale down") and code == 0
        reason_key = worker.reason or ("exit" if code == 0 else "crash" if code > 0 else "killed")
        self.state.restarts[reason_key] = self.state.restarts.get(reason_key, 0) + 1
        now = time.monotonic()
        cause = worker.killed or exit_cause(code)
        # A worker that drained at shutdown released its jobs itself; a rescue then would only delay the exit
        # when the database is down.
        if worker.db_id and not (planned and self.state.stopping):
            self.rescuer.request(worker.db_id, worker.pid, cause, now)
        if planned:
            log.info("worker exited", worker_pid=worker.pid, reason=worker.reason)
            return
        log.error(
            "worker died", worker_pid=worker.pid, exit_code=code, reason=reason_key, cause=cause, running=worker.running
        )
        if self.state.stopping:
            return
        verdict = judge(worker, code)
        if verdict is Verdict.REPLACE_NOW:
            self.state.next_spawn_at = now
            return
        self.state.next_spawn_at = now + self.state.guard.died(now)
        if verdict is Verdict.ASK_THE_RESCUE:
            self.state.unjudged[worker.db_id] = worker.pid
        elif verdict is Verdict.UNEXPLAINED:
            self._crashed(worker.pid, "died before it could serve")

    def _rescue(self) -> None:
        now = time.monotonic()
        self.rescuer.kill_overdue(now)
        self.rescuer.start_due(now)

    def _rescue_reported(self, report: RescueReport) -> None:
        self.state.rescued += report.jobs or 0
        if self.state.unjudged.pop(report.worker_id, None) is None or self.state.stopping:
            return
        if report.jobs is None:
            self._crashed(report.worker_pid, "died with nothing running (as far as could be told)")
        elif not report.jobs:
            self._crashed(report.worker_pid, "died with nothing running")

    def _crashed(self, pid: int, why: str) -> None:
        """A death no job explains: it counts towards the crash-loop guard."""
        log.warning("worker death counts towards the crash-loop guard", worker_pid=pid, why=why)
        if not self.state.guard.crashed(time.monotonic()):
            return
        log.critical(
            "workers are crashing in a loop: giving up",
            crashes=len(self.state.guard.crashes),
            window=CRASH_WINDOW,
        )
        self.state.exit_code = 1
        self.handle_term()

    def _watchdog(self) -> None:
        now = time.monotonic()
        if self.notifier.watchdog_due(now):
            self.notifier.watchdog(now)

    def _status(self) -> str:
        return f"{len(self._active())} workers running, {len(self.config.entrypoints)} entrypoints"


__all__ = ["Supervisor"]

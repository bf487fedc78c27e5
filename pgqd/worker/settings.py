"""How one worker engine runs. The defaults shared with the daemon's ``[workers]`` section come from there."""

from __future__ import annotations

from dataclasses import dataclass

from pgqd.config.model import WorkersConfig

# One source of defaults: the config dataclass that ``pgqd config`` prints.
_CONFIG = WorkersConfig(processes=1)


@dataclass(frozen=True)
class WorkerSettings:
    """How one worker runs. Durations are in seconds."""

    concurrency: int = _CONFIG.concurrency
    batch_size: int = _CONFIG.batch_size
    poll_interval: float = _CONFIG.poll_interval
    worker_timeout: float = _CONFIG.worker_timeout
    shutdown_timeout: float = _CONFIG.shutdown_timeout
    heartbeat_interval: float | None = None
    # How long the log keeps finished jobs (None: forever), applied by the daemon's lead worker.
    retention: float | None = None
    flush_linger: float = 0.005
    flush_max_batch: int = 500
    # Stop claiming after this many jobs (0 = never), so the process can be replaced (see ``Worker.retiring``).
    max_jobs: int = _CONFIG.max_jobs_per_worker

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.batch_size < 1:
            raise ValueError("concurrency and batch_size must be at least 1")
        if min(self.poll_interval, self.worker_timeout) <= 0 or self.shutdown_timeout < 0:
            raise ValueError("poll_interval and worker_timeout must be positive, shutdown_timeout not negative")

    @property
    def heartbeat_every(self) -> float:
        """Seconds between two heartbeats: ``heartbeat_interval``, or a quarter of the timeout (at most 5 s)."""
        # Several heartbeats per timeout, so one slow heartbeat never makes a live worker look dead.
        return self.heartbeat_interval or min(self.worker_timeout / 4, 5.0)

    @property
    def claims_stop_after(self) -> float:
        """Seconds without a successful heartbeat after which the worker claims nothing: one heartbeat before the
        fleet may presume it dead and hand its jobs to others, it takes no work it might not be able to record."""
        return max(self.worker_timeout - self.heartbeat_every, self.heartbeat_every)

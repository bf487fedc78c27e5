"""An entrypoint: a name producers enqueue to, the handler that runs its jobs, and the rules it runs under."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pgqd.models import EntrypointLimit
from pgqd.units import Rate

Handler = Callable[..., Any]
Backoff = Literal["exponential", "linear", "constant"]
OnFailure = Literal["hold", "delete"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing job runs and how long it waits in between.

    ``max_attempts`` counts every run, the first included: 1 means never retry. The wait before run ``n + 1`` is
    ``initial`` times 2**(n-1) (exponential), times n (linear) or just ``initial`` (constant), capped at
    ``maximum``; with ``jitter`` it is drawn uniformly between half and all of that, so that a burst of failures
    does not come back as a burst.
    """

    max_attempts: int = 1
    backoff: Backoff = "exponential"
    initial: float = 1.0
    maximum: float = 600.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial < 0 or self.maximum < 0:
            raise ValueError("retry delays must not be negative")

    def delay_after(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed run number ``attempt`` (1-based)."""
        step = max(attempt, 1)
        if self.backoff == "exponential":
            base = self.initial * 2.0 ** min(step - 1, 62)
        elif self.backoff == "linear":
            base = self.initial * step
        else:
            base = self.initial
        base = min(base, self.maximum)
        if self.jitter and base > 0:
            return (rng or random).uniform(base / 2, base)
        return base


@dataclass(frozen=True)
class Entrypoint:
    """Everything the worker needs to know to run jobs of one entrypoint."""

    name: str
    handler: Handler
    concurrency_limit: int = 0
    rate_limit: Rate | None = None
    timeout: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_failure: OnFailure = "delete"
    store_result: bool = False
    # Deaths of its worker process while it ran alone before a job is given up (docs/reliability.md).
    max_worker_deaths: int = 3
    # Finished jobs keep their payload in the log, so that what a job was called with stays visible.
    keep_payload: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an entrypoint needs a name")
        if self.concurrency_limit < 0:
            raise ValueError(f"{self.name}: concurrency_limit must not be negative")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"{self.name}: timeout must be positive")
        if self.max_worker_deaths < 1:
            raise ValueError(f"{self.name}: max_worker_deaths must be at least 1")
        if not callable(self.handler):
            raise ValueError(f"{self.name}: handler {self.handler!r} is not callable")

    @property
    def limit(self) -> EntrypointLimit:
        rate = self.rate_limit
        return EntrypointLimit(
            name=self.name,
            concurrency=self.concurrency_limit,
            rate_per_second=rate.per_second if rate else 0.0,
            burst=rate.burst if rate else 0.0,
            max_worker_deaths=self.max_worker_deaths,
            hold_failures=self.on_failure == "hold",
        )

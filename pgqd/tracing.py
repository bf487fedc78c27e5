"""Optional OpenTelemetry tracing (``pip install 'pgqd[otel]'``).

A producer that enqueues inside a span puts the span's context into the job's headers (W3C ``traceparent``);
the worker runs the job in a CONSUMER span linked to it. With the package missing, or no tracer provider set
up by the application, both are no-ops that cost a dictionary lookup.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from pgqd.models import Finished, Outcome

propagate: Any
trace: Any
try:
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - exercised only without the extra installed
    propagate = None
    trace = None

TRACER_NAME = "pgqd"


_RECHECK_AFTER = 5.0
_last_check = (float("-inf"), False)


def refresh() -> None:
    """Forgets a remembered "no", so the next job looks for a tracer provider again."""
    global _last_check
    _last_check = (float("-inf"), False)


def enabled() -> bool:
    """True when the application has set up a real tracer provider (not the API's default no-op).

    Asking OpenTelemetry costs environment lookups while no provider is set, so a "no" is remembered for a few
    seconds (an application that sets its provider later is picked up then); a "yes" is final.
    """
    global _last_check
    if trace is None:
        return False
    checked_at, answer = _last_check
    now = time.monotonic()
    if answer or now - checked_at < _RECHECK_AFTER:
        return answer
    answer = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    _last_check = (now, answer)
    return answer


def trace_headers() -> dict[str, str]:
    """The current span's context as headers (``traceparent``...), or nothing when there is no span."""
    if propagate is None or trace is None or not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def job_span(entrypoint: str, job_id: int, attempt: int, headers: Mapping[str, Any]) -> Iterator[Any]:
    """A CONSUMER span around one run of a job, linked to the producer's span found in ``headers``."""
    if trace is None or propagate is None or not enabled():
        yield None
        return
    producer = trace.get_current_span(propagate.extract({k: str(v) for k, v in headers.items()})).get_span_context()
    links = [trace.Link(producer)] if producer.is_valid else []
    tracer = trace.get_tracer(TRACER_NAME)
    attributes: dict[str, str | int] = {
        "messaging.system": "pgqd",
        "messaging.operation": "process",
        "messaging.destination.name": entrypoint,
        "messaging.message.id": str(job_id),
        "pgqd.attempt": attempt,
    }
    with tracer.start_as_current_span(
        f"{entrypoint} process", kind=trace.SpanKind.CONSUMER, links=links, attributes=attributes
    ) as span:
        yield span


def describe_outcome(span: Any, outcome: Outcome) -> None:
    """Records how the run ended on its span: the outcome, and an error status for failures."""
    if trace is None:
        return
    label = outcome.status if isinstance(outcome, Finished) else outcome.kind
    span.set_attribute("pgqd.outcome", label)
    if outcome.error is not None and label not in ("successful", "retry"):
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{outcome.error.type}: {outcome.error.message}"))

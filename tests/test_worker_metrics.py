"""What a worker's per-job figures add up to once published (``WorkerMetrics``), without a daemon."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from pgqd.daemon.metrics import WorkerMetrics
from pgqd.models import Finished, Unfinished


def test_published_figures_add_up_what_the_jobs_did() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    for _ in range(4):
        metrics.job_started("mail", 0.003)
    metrics.job_started("report", -0.5)  # a clock step: counted as no wait
    metrics.job_ended("mail", Finished(1, "successful"), 0.002)
    metrics.job_ended("mail", Finished(2, "exception"), 0.02)
    metrics.job_ended("mail", Unfinished(3, "retry", 5.0), 0.02)
    metrics.job_ended("report", Unfinished(4, "hold"), 0.7)
    metrics.publish()
    metrics.job_started("mail", 0.003)  # after the publish: in the next one
    value = registry.get_sample_value

    assert value("pgqd_jobs_in_flight", {"entrypoint": "mail"}) == 1  # four started, three ended
    assert not value("pgqd_jobs_in_flight", {"entrypoint": "report"})  # one started, one ended
    assert value("pgqd_jobs_completed_total", {"entrypoint": "mail", "outcome": "successful"}) == 1
    assert value("pgqd_jobs_completed_total", {"entrypoint": "mail", "outcome": "exception"}) == 1
    assert value("pgqd_jobs_completed_total", {"entrypoint": "mail", "outcome": "retried"}) == 1
    assert value("pgqd_jobs_completed_total", {"entrypoint": "report", "outcome": "held"}) == 1
    assert value("pgqd_job_retries_total", {"entrypoint": "mail"}) == 1
    assert value("pgqd_job_retries_total", {"entrypoint": "report"}) is None
    assert value("pgqd_job_pickup_latency_seconds_count", {"entrypoint": "mail"}) == 4
    assert value("pgqd_job_pickup_latency_seconds_bucket", {"entrypoint": "mail", "le": "0.002"}) == 0
    assert value("pgqd_job_pickup_latency_seconds_bucket", {"entrypoint": "mail", "le": "0.005"}) == 4
    assert value("pgqd_job_pickup_latency_seconds_sum", {"entrypoint": "report"}) == 0
    # Runs that ended, and a hold; not a retry.
    assert value("pgqd_job_duration_seconds_count", {"entrypoint": "mail"}) == 2
    assert value("pgqd_job_duration_seconds_sum", {"entrypoint": "mail"}) == pytest.approx(0.022)
    assert value("pgqd_job_duration_seconds_count", {"entrypoint": "report"}) == 1

    metrics.job_ended("mail", Finished(5, "successful"), 0.001)
    metrics.job_ended("mail", Finished(6, "successful"), 0.001)
    metrics.publish()
    assert value("pgqd_jobs_in_flight", {"entrypoint": "mail"}) == 0
    assert value("pgqd_jobs_completed_total", {"entrypoint": "mail", "outcome": "successful"}) == 3
    assert value("pgqd_job_pickup_latency_seconds_count", {"entrypoint": "mail"}) == 5

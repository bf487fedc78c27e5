"""pgqd: a PostgreSQL-backed background job queue for Python, run as a supervised worker daemon.

The public API is what this module exports; everything else is internal.
"""

from pgqd.backend.clock import ManualClock
from pgqd.backend.memory import MemoryBackend
from pgqd.backend.postgres import PostgresBackend
from pgqd.client import Client, JobSpec
from pgqd.entrypoint import Entrypoint, RetryPolicy
from pgqd.errors import (
    BackendUnavailable,
    ConfigError,
    DedupeConflict,
    IdentifierError,
    JobNotFound,
    PgqdError,
    ReadOnlyDatabase,
    SchemaVersionError,
    UnknownParents,
)
from pgqd.job import Context, InvalidPayload, Job, RetryLater
from pgqd.models import CancelResult, JobLinks, JobState, PauseState, WorkflowView
from pgqd.schema import install
from pgqd.sync_client import SyncClient
from pgqd.units import Rate
from pgqd.worker.engine import Worker, WorkerSettings
from pgqd.workflow import Step, Workflow, WorkflowRun

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "CancelResult",
    "Client",
    "ConfigError",
    "Context",
    "DedupeConflict",
    "Entrypoint",
    "IdentifierError",
    "InvalidPayload",
    "Job",
    "JobLinks",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "ManualClock",
    "MemoryBackend",
    "PauseState",
    "PgqdError",
    "PostgresBackend",
    "Rate",
    "ReadOnlyDatabase",
    "RetryLater",
    "RetryPolicy",
    "SchemaVersionError",
    "Step",
    "SyncClient",
    "UnknownParents",
    "Worker",
    "WorkerSettings",
    "Workflow",
    "WorkflowRun",
    "WorkflowView",
    "__version__",
    "install",
]

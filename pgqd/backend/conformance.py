"""A static check that every adapter satisfies its half of the storage port, made by ``mypy --strict pgqd``: a
method missing from one, or with another signature, fails the type check before any test runs. Nothing imports
this module; the behavioural suite (tests/test_behaviour.py and the tests/test_port_*.py sections) checks what
they do."""

from __future__ import annotations

from pgqd.backend.base import Backend, ProducerBackend
from pgqd.backend.memory import MemoryBackend
from pgqd.backend.postgres import PostgresBackend
from pgqd.producers.backend import DriverBackend


def as_backends(memory: MemoryBackend, postgres: PostgresBackend) -> tuple[Backend, Backend]:
    return memory, postgres


def as_producer_backends(driver: DriverBackend) -> ProducerBackend:
    return driver

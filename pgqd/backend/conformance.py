"""A static check that both adapters satisfy the storage port, made by ``mypy --strict pgqd``: a method missing
from one, or with another signature, fails the type check before any test runs. (The driver adapter's check is
in pgqd/producers/backend.py: the storage port does not import the producers.) Nothing imports this module; the
behavioural suite (tests/test_behaviour.py and the tests/test_port_*.py sections) checks what they do."""

from __future__ import annotations

from pgqd.backend.base import Backend
from pgqd.backend.memory import MemoryBackend
from pgqd.backend.postgres import PostgresBackend


def as_backends(memory: MemoryBackend, postgres: PostgresBackend) -> tuple[Backend, Backend]:
    return memory, postgres

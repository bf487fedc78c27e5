"""Storage backends: the ``Backend`` port and its PostgreSQL and in-memory adapters."""

from pgqd.backend.base import Backend, EventCallback, ProducerBackend, Subscription

__all__ = ["Backend", "EventCallback", "ProducerBackend", "Subscription"]

"""Producers on every PostgreSQL driver: one small adapter per driver family that runs a statement on the
caller's connection, session or pool.

What each producer call sends and how to read the answer, without doing any I/O, is written once for every
driver and for the worker's own pool, in ``pgqd.backend.operations``. ``drivers`` execute one statement on a
driver, offering what ``executors`` describes; ``targets`` picks the adapter for whatever the caller passed.
Drivers are imported only when a target of theirs shows up.
"""

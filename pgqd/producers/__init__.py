"""Producers on every PostgreSQL driver: pgqd's producer operations written once, and one small adapter per
driver family that runs a statement on the caller's connection, session or pool.

``operations`` says what each producer call sends and how to read the answer, without doing any I/O;
``drivers`` execute one statement on a driver, offering what ``executors`` describes; ``targets`` picks the
adapter for whatever the caller passed. Drivers are imported only when a target of theirs shows up.
"""

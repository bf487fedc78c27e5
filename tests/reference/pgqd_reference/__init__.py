"""Running the reference backends' own test suites (Django's tests/tasks, django-tasks-db's tests) against
PgqdTaskBackend and the real daemon. Only two things are adapted: which backend the suites' settings name
(``backends``) and the step that runs the worker (the daemon runs every task; the adapters wait for it). What is
skipped, and why, is listed in ``skips``.

This is a top-level package (not under ``tests``) because django-tasks-db's suite is itself a package named
``tests``: the runner and the daemon's workers import it from the suite's folder."""

"""A small Django project for the tests: a view enqueuing inside atomic() and tasks run by the real daemon."""

"""Integrations with frameworks; each lives in its own optional extra."""

"""pgqd for Django: enqueue on Django's connection (``client``, ``enqueue``) and a Tasks backend
(``PgqdTaskBackend``). The daemon runs the tasks when its config names ``[django] settings``."""

from pgqd.contrib.django.backend import PgqdTaskBackend
from pgqd.contrib.django.producer import client, enqueue

__all__ = ["PgqdTaskBackend", "client", "enqueue"]

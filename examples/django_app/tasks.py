"""Tasks of the example project: the daemon runs them in its worker processes, with Django set up."""

from __future__ import annotations

from django.utils import timezone

from examples.django_app.models import Signup
from pgqd.contrib.django.compat import task


@task()
def send_welcome(signup_id: int) -> str:
    """Sync: runs in the worker's thread pool, between Django's connection clean-ups."""
    signup = Signup.objects.get(pk=signup_id)
    signup.welcomed_at = timezone.now()
    signup.save(update_fields=["welcomed_at"])
    return f"welcomed {signup.email}"


@task()
async def count_signups() -> int:
    """Async: runs on the worker's event loop; the ORM's async methods work as in an async view."""
    return await Signup.objects.acount()

"""The signup view: the signup row, the welcome task and a plain pgqd job commit together or not at all."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

import pgqd.contrib.django
from examples.django_app.models import Signup
from examples.django_app.tasks import count_signups, send_welcome
from pgqd.contrib.django.compat import TaskResultDoesNotExist


@csrf_exempt
@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    email = request.POST.get("email", "")
    try:
        with transaction.atomic():
            new = Signup.objects.create(email=email)
            welcome = send_welcome.enqueue(new.pk)
            # Any pgqd entrypoint works too: send_email is one of the example daemon's own handlers.
            mail_job = pgqd.contrib.django.enqueue("send_email", {"to": email, "subject": "Welcome"})
            if "@" not in email:
                # Raising inside atomic() rolls back the signup and both jobs: no worker ever sees them.
                raise ValueError("not an email address")
    except (ValueError, IntegrityError) as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"signup": new.pk, "task": welcome.id, "job": mail_job})


@csrf_exempt
@require_POST
def count(request: HttpRequest) -> JsonResponse:
    """Enqueues the async task; its result id leads to the count: POST /count, then GET /tasks/<result id>."""
    return JsonResponse({"task": count_signups.enqueue().id})


def result(request: HttpRequest, result_id: str) -> JsonResponse:
    """What became of a task (any task of this backend): GET /tasks/<result id>; 404 for an id that names none."""
    try:
        found = send_welcome.get_backend().get_result(result_id)
    except TaskResultDoesNotExist:
        raise Http404(f"no task result {result_id!r}") from None
    value = found.return_value if found.status == "SUCCESSFUL" else None
    return JsonResponse(
        {"status": found.status, "value": value, "errors": [e.exception_class_path for e in found.errors]}
    )

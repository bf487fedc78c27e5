"""A view that writes business data and enqueues in one transaction, and can be made to fail after enqueueing."""

from __future__ import annotations

from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse

import pgqd.contrib.django
from tests.django_project.tasks import welcome


class SignupFailed(Exception):
    pass


def signup(request: HttpRequest) -> JsonResponse:
    email = request.POST["email"]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO test_signups (email) VALUES (%s) RETURNING id", [email])
            (signup_id,) = cursor.fetchone()
        job_id = pgqd.contrib.django.enqueue("send_email", {"to": email})
        result = welcome.enqueue(signup_id)
        if request.POST.get("fail"):
            raise SignupFailed(f"signup {signup_id} failed after enqueueing")
    return JsonResponse({"signup": signup_id, "job": job_id, "task": result.id})

from __future__ import annotations

from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from dataqueue.contrib.django import queue_from_settings
from signups.models import Signup


class SimulatedError(Exception):
    """Raised by ``POST /signup/?fail=1`` after enqueueing, to show the rollback."""


@csrf_exempt  # a JSON API endpoint; forms in templates would use the CSRF token
@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    email = request.POST.get("email", "").strip()
    if "@" not in email:
        return JsonResponse({"error": "an email address is required"}, status=400)
    fail = "1" in (request.GET.get("fail"), request.POST.get("fail"))
    queue = queue_from_settings()
    try:
        with transaction.atomic():  # the signup and its job commit together, or neither
            new_signup = Signup.objects.create(email=email)
            job_id = queue.add_job(
                "send_welcome", {"signup_id": new_signup.pk, "email": email}, db=connection
            )
            if fail:
                raise SimulatedError(
                    f"failing signup {new_signup.pk} after enqueueing job {job_id}"
                )
    except SimulatedError as exc:
        return JsonResponse({"error": str(exc), "rolled_back": True}, status=500)
    return JsonResponse({"signup_id": new_signup.pk, "job_id": job_id}, status=201)

"""The newsletter sign-up (a visitor's write) and the health check."""

from __future__ import annotations

import json

from cms import __version__ as cms_version
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from newsletter.models import Subscriber


@csrf_exempt  # type: ignore[untyped-decorator]  # posted as JSON by scripts, without a form
@require_POST  # type: ignore[untyped-decorator]
def subscribe(request: HttpRequest) -> JsonResponse:
    """Signs up `email` (a JSON body `{"email": ...}` or a form field): 201 when new, 200 when
    it was already signed up, 400 when it is no e-mail address."""
    if request.content_type == "application/json":
        try:
            email = json.loads(request.body).get("email")
        except (ValueError, AttributeError):
            email = None
    else:
        email = request.POST.get("email")
    try:
        validate_email(email)
    except ValidationError:
        return JsonResponse({"error": "an e-mail address is needed in `email`"}, status=400)
    subscriber, created = Subscriber.objects.get_or_create(email=email)
    return JsonResponse(_as_json(subscriber), status=201 if created else 200)


@require_GET  # type: ignore[untyped-decorator]
def subscriber(request: HttpRequest) -> JsonResponse:
    """The sign-up of `?email=`: 200 with it, 404 when there is none."""
    found = Subscriber.objects.filter(email=request.GET.get("email", "")).first()
    if found is None:
        return JsonResponse({"error": "not subscribed"}, status=404)
    return JsonResponse(_as_json(found))


def _as_json(subscriber: Subscriber) -> dict[str, str]:
    return {"email": subscriber.email, "subscribed_at": subscriber.subscribed_at.isoformat()}


@require_GET  # type: ignore[untyped-decorator]
def healthz(request: HttpRequest) -> JsonResponse:
    """200 once the database answers a query (a read: it works on a read-only database too),
    with the django CMS version that answers and the number of migrations the database has."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM django_migrations")
        (migrations,) = cursor.fetchone()
    return JsonResponse({"status": "ok", "cms": cms_version, "migrations": migrations})

from __future__ import annotations

from django.apps import AppConfig


class NewsletterConfig(AppConfig):  # type: ignore[misc]  # Django has no type stubs here
    default_auto_field = "django.db.models.BigAutoField"
    name = "newsletter"

from __future__ import annotations

from django.db import models


class Subscriber(models.Model):  # type: ignore[misc]  # Django has no type stubs here
    """A visitor who signed up for the newsletter."""

    email = models.EmailField(unique=True)
    subscribed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return str(self.email)

"""URLs of the site, as django CMS's guide lays them out: the admin, the newsletter and the CMS
pages under a language prefix (/en/...); the health check and uploaded files outside it.

A path outside the prefix that answers 404 is redirected to its /en/ twin by Django's
LocaleMiddleware (the CMS's pages match almost any path there), so the newsletter, whose
lookup answers 404 for an unknown address, is inside the prefix like the rest of the site."""

from __future__ import annotations

import re

from django.conf import settings
from django.conf.urls.i18n import i18n_patterns
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve
from newsletter.views import healthz

urlpatterns = [
    # No language prefix and no trailing slash: answers 200 without a redirect.
    path("healthz", healthz, name="healthz"),
    # Uploaded files, served by the application server itself (DEBUG is off in production).
    re_path(
        rf"^{re.escape(settings.MEDIA_URL.lstrip('/'))}(?P<path>.*)$",
        serve,
        {"document_root": settings.MEDIA_ROOT},
    ),
]

urlpatterns += i18n_patterns(
    path("admin/", admin.site.urls),
    path("newsletter/", include("newsletter.urls")),
    path("", include("cms.urls")),  # django CMS's pages: last, it takes every other path
)

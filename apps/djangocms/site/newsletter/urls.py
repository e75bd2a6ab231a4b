from __future__ import annotations

from django.urls import path

from newsletter import views

urlpatterns = [
    path("subscribe", views.subscribe, name="newsletter-subscribe"),
    path("subscribers", views.subscriber, name="newsletter-subscriber"),
]

"""Django settings for the routing end-to-end test: a CPU-heavy middleware after ours."""

from __future__ import annotations

DEBUG = False
SECRET_KEY = "span-profiles-e2e"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.support.apps.django_routing_app"
MIDDLEWARE = [
    "span_profiles.django.SpanProfilesMiddleware",
    "tests.support.apps.django_routing_app.SlowSessionMiddleware",
]
INSTALLED_APPS: list[str] = []
USE_TZ = True

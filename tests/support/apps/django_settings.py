"""Django settings for the uvicorn end-to-end test."""

from __future__ import annotations

DEBUG = False
SECRET_KEY = "span-profiles-e2e"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.support.apps.django_asgi"
MIDDLEWARE = ["span_profiles.django.SpanProfilesMiddleware"]
INSTALLED_APPS: list[str] = []
USE_TZ = True

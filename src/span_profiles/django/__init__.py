"""Django: a server span per request, named after the URL pattern (``GET items/<int:pk>``).

::

    MIDDLEWARE = [
        "span_profiles.django.SpanProfilesMiddleware",   # first, so it covers the others
        ...
    ]
    INSTALLED_APPS = [..., "span_profiles.django"]       # optional: instrument at start-up
    SPAN_PROFILES = {"scope": "root", "application_name": "shop"}

The middleware is sync- and async-capable, so Django runs it natively under WSGI (gunicorn) and
ASGI (uvicorn, daphne). ``SPAN_PROFILES`` takes any :class:`span_profiles.Settings` field (the
profiler's included) and every other option the adapters take, through the same resolution as
keyword arguments; explicit values beat it, it beats the environment. The span is named after the
URL pattern from its start: the resolver is asked before the other middlewares run. With the app installed,
a bad value fails ``django.setup()``; without it, the first request.
"""

from __future__ import annotations

from span_profiles.django.middleware import SpanProfilesMiddleware as SpanProfilesMiddleware
from span_profiles.django.middleware import django_settings as django_settings

__all__ = ["SpanProfilesMiddleware", "django_settings"]

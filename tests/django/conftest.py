"""Django test settings: a tiny URLconf and our middleware first in MIDDLEWARE."""

from __future__ import annotations

from typing import Any

import pytest

# A submodule, so that this tests/django directory itself never passes for Django.
pytest.importorskip("django.conf")

from django.conf import settings

import django

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="span-profiles-tests",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="tests.support.apps.django_urls",
        MIDDLEWARE=["span_profiles.django.SpanProfilesMiddleware"],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()


@pytest.fixture
def anyio_backend() -> Any:
    """Django's AsyncClient runs on asyncio only."""
    return "asyncio"

"""The optional Django app: resolves ``SPAN_PROFILES`` and instruments during ``django.setup()``."""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-untyped, unused-ignore]

from span_profiles._instrument import instrument
from span_profiles.django.middleware import django_settings


class SpanProfilesConfig(AppConfig):  # type: ignore[misc, unused-ignore]
    """``INSTALLED_APPS`` entry ``"span_profiles.django"``."""

    name = "span_profiles.django"
    label = "span_profiles"
    verbose_name = "span-profiles"

    def ready(self) -> None:
        """Fail start-up on an invalid setting, then install the hooks (unless disabled)."""
        settings = django_settings()
        if settings.enabled:
            instrument(settings=settings)

"""ASGI entry point: ``uvicorn shop.asgi:application`` or ``daphne shop.asgi:application``."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from shop.tracing import setup_tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
# Before Django loads its middleware: span-profiles' middleware starts the agent then.
setup_tracing()
application = get_asgi_application()

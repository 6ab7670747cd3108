"""WSGI entry point: ``gunicorn -c gunicorn.conf.py shop.wsgi:application``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from shop.tracing import setup_tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
# Before Django loads its middleware: span-profiles' middleware starts the agent then.
setup_tracing()
application = get_wsgi_application()

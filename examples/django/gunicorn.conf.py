"""gunicorn settings for the Django example (WSGI): ``gunicorn -c gunicorn.conf.py shop.wsgi:application``.

The pyroscope-io agent is not fork-safe, so it must start in each worker, after the fork. Here
that happens by itself: span-profiles' middleware starts the agent on each worker's first request
(after ``shop.tracing`` set the provider, whose ``service.name`` names the profiles), so this works
with or without ``preload_app``.
"""

from __future__ import annotations

import os

bind = "127.0.0.1:8000"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads, so that one worker serves concurrent requests, each thread labelled with its span.
worker_class = "gthread"
threads = 8

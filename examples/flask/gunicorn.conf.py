"""gunicorn settings for the Flask example: ``gunicorn -c gunicorn.conf.py app:app``.

The pyroscope-io agent is not fork-safe: each worker starts its own, after the fork, in the
``post_worker_init`` hook below, which runs once the worker loaded the app (so the tracer
provider's ``service.name`` names the profiles). Without the hook, span-profiles would start it on
each worker's first request.
"""

from __future__ import annotations

import os

from span_profiles.gunicorn import post_worker_init as post_worker_init

bind = "127.0.0.1:8000"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads, so that one worker serves concurrent requests; each request thread is labelled with
# its own span.
worker_class = "gthread"
threads = 8

"""Django settings of the example: the minimum to serve JSON views, plus span-profiles."""

from __future__ import annotations

DEBUG = False
SECRET_KEY = "span-profiles-example-not-secret"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "shop.urls"
INSTALLED_APPS = [
    # Instruments (and checks SPAN_PROFILES) during django.setup().
    "span_profiles.django",
]
MIDDLEWARE = [
    # First, so that its span covers the other middlewares and the view.
    "span_profiles.django.SpanProfilesMiddleware",
    "shop.middleware.span_id_header",
]
USE_TZ = True

# Any span_profiles.Settings field; these beat the PYROSCOPE_*/SPAN_PROFILES_* environment, so
# the server address and the upload interval are left to it (default: the local receiver at
# http://127.0.0.1:4040, every 10 s).
SPAN_PROFILES = {
    "scope": "root",
    "span_name": True,
}

#!/usr/bin/env python
"""Django's command-line utility for the example (``python manage.py check``)."""

from __future__ import annotations

import os
import sys

from shop.tracing import setup_tracing


def main() -> None:
    """Run a Django management command."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    setup_tracing()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()

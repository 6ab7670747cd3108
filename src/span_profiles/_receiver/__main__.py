"""``python -m span_profiles._receiver``: the same as the ``span-profiles`` command."""

from __future__ import annotations

import sys

from span_profiles._receiver.cli import main

sys.exit(main())

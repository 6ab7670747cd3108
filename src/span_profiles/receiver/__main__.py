"""``python -m span_profiles.receiver``: the same as the ``span-profiles`` command."""

from __future__ import annotations

import sys

from span_profiles.receiver.cli import main

sys.exit(main())

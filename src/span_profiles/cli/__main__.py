"""``python -m span_profiles.cli``: the same as the ``span-profiles`` command."""

from __future__ import annotations

import sys

from span_profiles.cli import main

sys.exit(main())

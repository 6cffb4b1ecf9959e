"""``python -m benchmarks``."""

from __future__ import annotations

import sys

from benchmarks._suite import main

sys.exit(main())

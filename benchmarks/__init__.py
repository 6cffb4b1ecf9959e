"""The routing-quality benchmark suite of BENCHMARKS.md: scenarios B0-B8, the engine and baselines.

Run ``python -m benchmarks --quick`` (seconds) or ``python -m benchmarks --full`` (200 seeds);
:func:`run_suite` is the same thing as a function.
"""

from __future__ import annotations

from benchmarks._suite import main, run_suite

__all__ = ["main", "run_suite"]

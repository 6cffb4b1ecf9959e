"""The pure routing engine: posteriors, selection, change detection, trends, insights.

Nothing here performs I/O; stores and transports are plugged in around it, so the benchmark
suite drives it directly with plain numbers.
"""

from __future__ import annotations

from kalibr_core.engine._config import EngineTuning, ExplorationConfig
from kalibr_core.engine._detector import Change, ChangeDetector, bernoulli_kl
from kalibr_core.engine._router import (
    GoalRouter,
    PropensityInputs,
    RankedPath,
    Reason,
    Selection,
)
from kalibr_core.engine._state import PathInfo, PathState, Trend

__all__ = [
    "Change",
    "ChangeDetector",
    "EngineTuning",
    "ExplorationConfig",
    "GoalRouter",
    "PathInfo",
    "PathState",
    "PropensityInputs",
    "RankedPath",
    "Reason",
    "Selection",
    "Trend",
    "bernoulli_kl",
]

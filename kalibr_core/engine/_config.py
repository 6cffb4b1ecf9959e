"""Configuration value objects of the routing engine."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from kalibr_core._errors import ValidationError


def _check_rate(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or not 0.0 <= value <= 1.0
    ):
        raise ValidationError(f"{name} must be a number between 0 and 1, got {value!r}", field=name)


@dataclass(frozen=True, slots=True)
class ExplorationConfig:
    """Per-goal exploration settings (the spec's exploration config).

    Attributes:
        exploration_rate: None (default) lets the engine explore automatically (Thompson
            sampling's own exploration plus probing of demoted paths); a number in [0, 1] adds
            that share of uniform exploration on top.
        min_samples_before_exploit: Outcomes a path needs before it is exploited with
            confidence, rolled back, or used in the cost tie-break.
        rollback_threshold: A path whose success rate falls below this, with at least
            ``min_samples_before_exploit`` outcomes, is taken out of exploitation (still
            probed at a low rate) while another path does better.
        staleness_days: A path with no outcome for this long is probed again once.
        exploration_on_high_risk: Whether ``task_risk_level="high"`` decisions may explore.

    Example:
        >>> ExplorationConfig(exploration_rate=0.05).exploration_rate
        0.05
    """

    exploration_rate: float | None = None
    min_samples_before_exploit: int = 20
    rollback_threshold: float = 0.3
    staleness_days: float = 7.0
    exploration_on_high_risk: bool = False

    def __post_init__(self) -> None:
        _check_rate("exploration_rate", self.exploration_rate, allow_none=True)
        _check_rate("rollback_threshold", self.rollback_threshold)
        samples = self.min_samples_before_exploit
        if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= 100_000:
            raise ValidationError(
                f"min_samples_before_exploit must be an integer in [1, 100000], got {samples!r}",
                field="min_samples_before_exploit",
            )
        days = self.staleness_days
        if isinstance(days, bool) or not isinstance(days, int | float) or not days > 0:
            raise ValidationError(
                f"staleness_days must be a number > 0, got {days!r}", field="staleness_days"
            )
        if not isinstance(self.exploration_on_high_risk, bool):
            raise ValidationError(
                "exploration_on_high_risk must be a boolean", field="exploration_on_high_risk"
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (the wire format)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplorationConfig:
        """Build a config from a dict, ignoring None values (they keep the default)."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValidationError(
                f"unknown exploration config keys {sorted(unknown)}; accepted: "
                f"{sorted(cls.__dataclass_fields__)}",
                field="config",
            )
        return cls(**{k: v for k, v in data.items() if v is not None})


@dataclass(frozen=True, slots=True)
class EngineTuning:
    """Internal knobs of the learning algorithm, tuned by the benchmark suite.

    They are not part of the spec's exploration config; the defaults are what
    ``docs/benchmarks.md`` measures.

    Attributes:
        tie_margin: Paths whose success rate is within this of the best compete on cost.
        tie_enter_z: A path joins the cost tie set when ``gap + z * se <= tie_margin``
            (confidently within the margin: a path exactly at the margin must stay out).
        tie_exit_z: It leaves when ``gap + z * se > tie_margin`` (z below the entry z:
            hysteresis).
        detector_threshold: GLR statistic above which a change of a path's mean is declared.
        detector_growth: Growth of the threshold per e-fold of history beyond
            ``detector_growth_from`` outcomes since the last restart.
        detector_growth_from: Outcomes from which the threshold grows.
        detector_windows: Trailing window lengths tested for a change at each outcome.
        detector_min_before: Outcomes needed before a window for a change to be declared.
        detector_history: Outcomes kept per path for change detection and trends.
        probe_first: Decisions after a demotion before a demoted path is first probed.
        probe_max_interval: The longest interval between two probes of a demoted path.
        recovery_threshold: CUSUM log-likelihood ratio at which a demoted path's probes say
            it is back at the best path's level. While the evidence is positive (and a success
            is informative), the next probe comes ``probe_first`` decisions later.
        probe_after_refuted: When a failure ends a run of at least two successful probes, the
            next probe comes at most this many decisions later (0: the backed-off interval).
            Two successes in a row are rare for a path that is still broken and common for one
            that recovered, where one failure would otherwise cost a whole probe interval.
        recovery_trial: Outcomes a recovered path stays on trial.
        recovery_trial_threshold: The reversed CUSUM threshold at which a path on trial is
            demoted again (a false recovery).
        tie_min_samples: Outcomes both paths need before they may tie on cost.
    """

    tie_margin: float = 0.05
    tie_enter_z: float = 2.0
    tie_exit_z: float = 1.5
    tie_min_samples: int = 500
    detector_threshold: float = 11.0
    detector_growth: float = 1.5
    detector_growth_from: int = 5_000
    detector_windows: tuple[int, ...] = (10, 20, 40, 80, 160, 320, 640)
    detector_min_before: int = 20
    detector_history: int = 640
    probe_first: int = 25
    probe_max_interval: int = 400
    recovery_threshold: float = 4.0
    probe_after_refuted: int = 50
    recovery_trial: int = 30
    recovery_trial_threshold: float = 6.0

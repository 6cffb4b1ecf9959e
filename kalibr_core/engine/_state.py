"""Per-path learning state: sufficient statistics, change detection, probing, cost and latency."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from kalibr_core.engine._config import EngineTuning
from kalibr_core.engine._detector import Change, ChangeDetector

Trend = Literal["improving", "stable", "degrading"]


@dataclass(slots=True)
class PathInfo:
    """What the engine needs to know about a registered path (no statistics).

    Attributes:
        path_id: Canonical id.
        model_id: Model string.
        tool_id: Tools joined by commas, or None.
        params: Execution parameters.
        risk_level: low / medium / high.
        enabled: False once disabled (soft delete): no traffic, history kept.
        cost_hint: Expected cost per call in USD when no outcome has reported one yet.
        latency_hint: Expected latency in ms when no outcome has reported one yet.
    """

    path_id: str
    model_id: str
    tool_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    risk_level: str = "low"
    enabled: bool = True
    cost_hint: float | None = None
    latency_hint: float | None = None


@dataclass(slots=True, eq=False)
class PathState:
    """Learning state of one path within one scope (tenant, goal, pipeline).

    Totals are all-time, commutative increments (what stores persist). The *effective*
    statistics that drive sampling count only the outcomes since the last detected change, so a
    change restarts the path's statistics locally without losing history.
    """

    info: PathInfo
    tuning: EngineTuning
    successes: float = 0.0
    failures: float = 0.0
    count: int = 0
    eff_successes: float = 0.0
    eff_failures: float = 0.0
    eff_count: int = 0
    epoch_seq: int = -1
    cost_sum: float = 0.0
    cost_n: int = 0
    latency_sum: float = 0.0
    latency_n: int = 0
    demoted: bool = False
    rolled_back: bool = False
    next_probe_tick: int = 0
    probe_interval: int = 0
    last_change: Change | None = None
    last_change_tick: int = -1
    in_tie_set: bool = False
    last_outcome_at: float | None = None
    last_probe_at: float | None = None
    pulls: int = 0
    detector: ChangeDetector = field(init=False)
    _seqs: deque[int] = field(init=False)

    def __post_init__(self) -> None:
        t = self.tuning
        self.detector = ChangeDetector(
            threshold=t.detector_threshold,
            windows=t.detector_windows,
            min_before=t.detector_min_before,
            history=t.detector_history,
        )
        self._seqs = deque(maxlen=t.detector_history)

    # -- statistics ----------------------------------------------------------------------------
    @property
    def mean(self) -> float:
        """Posterior mean of the success rate, Beta(1 + s, 1 + f)."""
        return (self.eff_successes + 1.0) / (self.eff_successes + self.eff_failures + 2.0)

    @property
    def success_rate(self) -> float | None:
        """Observed success rate since the last restart (None without outcomes)."""
        n = self.eff_successes + self.eff_failures
        return self.eff_successes / n if n > 0 else None

    @property
    def lifetime_success_rate(self) -> float | None:
        """Observed success rate over all outcomes."""
        n = self.successes + self.failures
        return self.successes / n if n > 0 else None

    @property
    def avg_cost(self) -> float | None:
        """Mean reported cost per call, else the hint."""
        return self.cost_sum / self.cost_n if self.cost_n else self.info.cost_hint

    @property
    def avg_latency(self) -> float | None:
        """Mean reported latency in ms, else the hint."""
        return self.latency_sum / self.latency_n if self.latency_n else self.info.latency_hint

    def std_error(self) -> float:
        """Standard error of the posterior mean."""
        n = self.eff_successes + self.eff_failures + 2.0
        m = self.mean
        return math.sqrt(m * (1.0 - m) / (n + 1.0))

    # -- updates -------------------------------------------------------------------------------
    def add(self, value: float, weight: int = 1, *, effective: bool = True) -> None:
        """Add (weight=1) or remove (weight=-1) one outcome of value in [0, 1].

        ``effective=False`` changes only the all-time totals (an outcome before the restart).
        """
        self.successes += weight * value
        self.failures += weight * (1.0 - value)
        self.count += weight
        if effective:
            self.eff_successes = max(0.0, self.eff_successes + weight * value)
            self.eff_failures = max(0.0, self.eff_failures + weight * (1.0 - value))
            self.eff_count = max(0, self.eff_count + weight)

    def observe(
        self,
        value: float,
        *,
        seq: int,
        tick: int,
        cost_usd: float | None,
        latency_ms: float | None,
        now: float | None,
    ) -> Change | None:
        """Record a new outcome and run change detection. Returns the change, if any."""
        self.add(value)
        if cost_usd is not None:
            self.cost_sum += cost_usd
            self.cost_n += 1
        if latency_ms is not None:
            self.latency_sum += latency_ms
            self.latency_n += 1
        if now is not None:
            self.last_outcome_at = now
        self._seqs.append(seq)
        change = self.detector.observe(value)
        if change is not None:
            self._restart(change, tick)
        return change

    def _restart(self, change: Change, tick: int) -> None:
        """Keep only the changed window as the path's effective statistics."""
        window = change.window
        self.eff_successes = change.window_sum
        self.eff_failures = window - change.window_sum
        self.eff_count = window
        seqs = list(self._seqs)[-window:]
        self.epoch_seq = seqs[0] if seqs else -1
        self.detector.reset(keep_last=window)
        self.last_change = change
        self.last_change_tick = tick
        self.in_tie_set = False
        if change.kind == "drop":
            self.demote(tick)
        else:
            self.demoted = False
            self.rolled_back = False

    def demote(self, tick: int) -> None:
        """Take the path out of exploitation; it is probed at a growing interval."""
        if not self.demoted:
            self.demoted = True
            self.probe_interval = self.tuning.probe_first
            self.next_probe_tick = tick + self.probe_interval

    def correct(self, old_value: float, new_value: float, seq: int | None) -> None:
        """Replace one outcome's value: remove the old contribution, add the new one.

        When the outcome predates the last restart the baseline moves by the same amount, so
        the effective (post-restart) statistics are unchanged, as they would have been.
        """
        effective = seq is None or seq >= self.epoch_seq
        self.add(old_value, -1, effective=effective)
        self.add(new_value, 1, effective=effective)

    def schedule_probe(self, tick: int) -> None:
        """After probing, wait longer before the next probe (doubling, capped)."""
        self.probe_interval = min(
            self.tuning.probe_max_interval, max(self.tuning.probe_first, self.probe_interval * 2)
        )
        self.next_probe_tick = tick + self.probe_interval

    def trend(self, tick: int) -> Trend:
        """Improving, stable or degrading, from detected changes and recent outcomes."""
        if self.last_change is not None and tick - self.last_change_tick < 500:
            return "degrading" if self.last_change.kind == "drop" else "improving"
        recent = self.detector.recent(100)
        if len(recent) < 40:
            return "stable"
        new, old = recent[-20:], recent[:-20]
        new_mean, old_mean = sum(new) / len(new), sum(old) / len(old)
        pooled = (sum(recent) / len(recent)) or 0.5
        se = math.sqrt(max(pooled * (1 - pooled), 0.01) * (1 / len(new) + 1 / len(old)))
        delta = new_mean - old_mean
        if abs(delta) >= 0.1 and abs(delta) > 2 * se:
            return "improving" if delta > 0 else "degrading"
        return "stable"

    def prime(self, values: list[float], seqs: list[int]) -> None:
        """Rebuild the recent history (change detection, trend) from stored outcomes."""
        self.detector.prime(values)
        self._seqs.clear()
        self._seqs.extend(seqs)

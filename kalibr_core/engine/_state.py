"""Per-path learning state: sufficient statistics, change detection, probing, cost and latency."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from kalibr_core.engine._config import EngineTuning
from kalibr_core.engine._detector import Change, ChangeDetector

Trend = Literal["improving", "stable", "degrading"]

#: Probes of a demoted path (before the current run of evidence) that set its null level.
_RECOVERY_BASE = 30
_PROBES_KEPT = 200
#: Posterior standard deviations added to the null level of the recovery test.
_NULL_MARGIN_SD = 0.5
#: The recovery test always asks for at least this rise over the null.
_MIN_RECOVERY_GAP = 0.1
#: A success must move the recovery test at least this much for promising evidence to bring
#: the next probe forward (deep drops: yes; a path a few points below the best: no).
_QUICK_PROBE_LLR = 0.3


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
    recovery_score: float = 0.0
    trial_left: int = 0
    detector: ChangeDetector = field(init=False)
    _seqs: deque[int] = field(init=False)
    _run_sum: float = 0.0
    _run_n: int = 0
    _probes: deque[float] = field(init=False)
    _trial_score: float = 0.0
    _levels: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        t = self.tuning
        self.detector = ChangeDetector(
            threshold=t.detector_threshold,
            windows=t.detector_windows,
            min_before=t.detector_min_before,
            history=t.detector_history,
            growth=t.detector_growth,
            growth_from=t.detector_growth_from,
        )
        self._seqs = deque(maxlen=t.detector_history)
        self._probes = deque(maxlen=_PROBES_KEPT)

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
        reference: float | None = None,
    ) -> Change | None:
        """Record a new outcome and run change detection. Returns the change, if any.

        ``reference`` is the success rate of the best path in exploitation; a demoted path's
        outcomes (its probes) are tested against it for a recovery.
        """
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
        if self.demoted:
            if reference is not None:
                return self._test_recovery(value, reference, tick)
        elif self.trial_left > 0:
            return self._test_trial(value, tick)
        return None

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
        self.trial_left = 0
        if change.kind == "rise":
            self.demoted = False
            self.rolled_back = False
        # A drop demotes the path only if it falls clearly below the alternatives, which the
        # router knows (GoalRouter.observe); otherwise Thompson sampling weighs the new level.

    def demote(self, tick: int) -> None:
        """Take the path out of exploitation; it is probed at a growing interval."""
        if not self.demoted:
            self._reset_recovery()
            self._probes.clear()
            self.trial_left = 0
            self.demoted = True
            self.in_tie_set = False
            self.probe_interval = self.tuning.probe_first
            self.next_probe_tick = tick + self.probe_interval

    # -- recovery of a demoted path ------------------------------------------------------------
    def _reset_recovery(self) -> None:
        self.recovery_score = 0.0
        self._run_sum = 0.0
        self._run_n = 0

    def _test_recovery(self, value: float, reference: float, tick: int) -> Change | None:
        """CUSUM test of a demoted path's probes: back to the reference level, or still low?

        Each outcome adds the log-likelihood ratio of "succeeds at ``reference``" (the best path
        in exploitation) against "succeeds at its recent probe rate"; the path recovers when the
        sum, floored at zero, exceeds ``recovery_threshold``. About four consecutive successes
        suffice after a deep drop (.90 to .30), which keeps probing cheap.
        """
        high = min(reference, 0.99)
        # The null: the path's rate from its recent probes before the current run of evidence
        # (which would otherwise raise its own bar), half a posterior standard deviation high
        # so that a few lucky probes do not look like a recovery. Probes only: the window that
        # revealed the drop is biased low. Recent, so that old luck fades.
        probes = self._probes
        end = len(probes) - self._run_n
        before = [probes[i] for i in range(max(0, end - _RECOVERY_BASE), end)]
        base_n = len(before)
        mean = (sum(before) + 1.0) / (base_n + 2.0)
        spread = math.sqrt(mean * (1.0 - mean) / (base_n + 3.0))
        low = min(mean + _NULL_MARGIN_SD * spread, high - _MIN_RECOVERY_GAP)
        probes.append(value)
        if low <= 0.0:
            return None
        up = math.log(high / low)
        llr = value * up + (1.0 - value) * math.log((1.0 - high) / (1.0 - low))
        score = self.recovery_score + llr
        if score <= 0.0:
            # A failure after two or more successes is weak evidence either way: look again
            # soon rather than after the whole backed-off interval (B4's slow re-adoptions).
            if self._run_n >= 2 and self.tuning.probe_after_refuted:
                self.next_probe_tick = min(
                    self.next_probe_tick, tick + self.tuning.probe_after_refuted
                )
            self._reset_recovery()
            return None
        self.recovery_score = score
        self._run_sum += value
        self._run_n += 1
        if score <= self.tuning.recovery_threshold:
            if up >= _QUICK_PROBE_LLR:
                # Informative probes and positive evidence: the next probe is worth more (it
                # may complete a recovery), so it comes sooner.
                self.next_probe_tick = min(self.next_probe_tick, tick + self.tuning.probe_first)
            return None
        return self._recover(low, high, tick)

    def _recover(self, low: float, high: float, tick: int) -> Change:
        """Back in exploitation, on trial, with the probes of the winning run as statistics."""
        run_n, run_sum = self._run_n, self._run_sum
        change = Change("rise", run_n, run_sum, low, run_sum / run_n, self.recovery_score)
        self.eff_successes = run_sum
        self.eff_failures = run_n - run_sum
        self.eff_count = run_n
        seqs = list(self._seqs)[-run_n:]
        self.epoch_seq = seqs[0] if seqs else -1
        self.detector.reset(keep_last=run_n)
        self.demoted = False
        self.rolled_back = False
        self.last_change = change
        self.last_change_tick = tick
        self.trial_left = self.tuning.recovery_trial
        self._trial_score = 0.0
        self._levels = (low, high)
        self._reset_recovery()
        return change

    def _test_trial(self, value: float, tick: int) -> Change | None:
        """The reverse test while on trial: a false recovery is demoted again within a few
        outcomes, before the change detector has the history to notice it."""
        self.trial_left -= 1
        self._probes.append(value)
        low, high = self._levels
        llr = value * math.log(low / high) + (1.0 - value) * math.log((1.0 - low) / (1.0 - high))
        self._trial_score = max(0.0, self._trial_score + llr)
        if self._trial_score <= self.tuning.recovery_trial_threshold:
            return None
        n = self.tuning.recovery_trial - self.trial_left
        recent = self.detector.recent(n)
        change = Change(
            "drop", n, sum(recent), high, sum(recent) / max(1, len(recent)), self._trial_score
        )
        self.trial_left = 0
        self.last_change = change
        self.last_change_tick = tick
        # Back to probing at the interval reached before the false recovery.
        self._reset_recovery()
        self.demoted = True
        self.in_tie_set = False
        self.next_probe_tick = tick + max(self.probe_interval, self.tuning.probe_first)
        return change

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

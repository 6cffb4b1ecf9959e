"""Change detection on a path's outcome sequence: a windowed Bernoulli GLR test.

At each outcome the detector compares a few trailing windows (5, 10, 20, ... outcomes) with
everything observed before them since the last restart. For a window of length ``w`` with mean
``m2`` after ``n1`` earlier outcomes of mean ``m1`` (overall mean ``m``), the generalised
likelihood ratio statistic is ``n1 * kl(m1, m) + w * kl(m2, m)``, with ``kl`` the Bernoulli
Kullback-Leibler divergence (valid for fractional scores too). A statistic above the threshold
declares a change: a *drop* when ``m2 < m1``, a *rise* otherwise.

Testing a handful of geometric window lengths keeps each update O(number of windows) while
detecting both abrupt drops (short windows) and slow drifts (long windows). The library
defaults of Page-Hinkley are far too slow for 0/1 outcomes; this test is calibrated by the
divergence itself, so paths with different base rates share one threshold.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Literal

_EPS = 1e-9

ChangeKind = Literal["drop", "rise"]


def bernoulli_kl(p: float, q: float) -> float:
    """KL divergence between Bernoulli(p) and Bernoulli(q), with p, q clipped into (0, 1)."""
    p = min(max(p, _EPS), 1.0 - _EPS)
    q = min(max(q, _EPS), 1.0 - _EPS)
    return p * math.log(p / q) + (1.0 - p) * math.log((1.0 - p) / (1.0 - q))


def _entropy(p: float) -> float:
    """Bernoulli entropy in nats (0 at 0 and 1).

    The GLR statistic ``n1 * kl(m1, m) + n2 * kl(m2, m)`` equals
    ``n * H(m) - n1 * H(m1) - n2 * H(m2)`` (the split's entropy reduction), which is cheaper.
    """
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * _log(p) + (1.0 - p) * _log(1.0 - p))


_log = math.log


@dataclass(frozen=True, slots=True)
class Change:
    """A detected change of a path's mean.

    Attributes:
        kind: ``"drop"`` or ``"rise"``.
        window: Length of the trailing window that changed.
        window_sum: Sum of the outcome values in that window.
        before_mean: Mean before the window.
        after_mean: Mean inside the window.
        statistic: The GLR statistic that crossed the threshold.
    """

    kind: ChangeKind
    window: int
    window_sum: float
    before_mean: float
    after_mean: float
    statistic: float


@dataclass(slots=True)
class ChangeDetector:
    """Windowed GLR change detector over the outcomes since the last restart.

    Attributes:
        threshold: The GLR statistic that declares a change.
        windows: Trailing window lengths, ascending.
        min_before: Outcomes needed before a window.
        history: How many recent prefix sums to keep (bounds memory and the longest window).
        growth: Beyond ``growth_from`` outcomes since the restart, the threshold grows by
            ``growth * log(count / growth_from)``, so that a path tested at every outcome for
            a long time does not accumulate false alarms.
        growth_from: Outcomes from which the threshold grows.
    """

    threshold: float
    windows: tuple[int, ...]
    min_before: int
    history: int
    growth: float = 0.0
    growth_from: int = 1
    count: int = 0
    total: float = 0.0
    _prefix: deque[float] = field(default_factory=deque)
    _values: deque[float] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self._prefix = deque(self._prefix, maxlen=self.history + 1)
        self._values = deque(self._values, maxlen=self.history)
        if not self._prefix:
            self._prefix.append(0.0)

    def reset(self, keep_last: int = 0) -> None:
        """Restart detection, keeping the last ``keep_last`` outcomes as the new history."""
        kept = list(self._values)[-keep_last:] if keep_last > 0 else []
        self.count = 0
        self.total = 0.0
        self._prefix.clear()
        self._prefix.append(0.0)
        self._values.clear()
        for value in kept:
            self._push(value)

    def recent(self, n: int) -> list[float]:
        """The last ``n`` outcome values (fewer if fewer were seen since the restart)."""
        if n <= 0:
            return []
        values = list(islice(reversed(self._values), n))
        values.reverse()
        return values

    def _push(self, value: float) -> None:
        self.count += 1
        self.total += value
        self._prefix.append(self.total)
        self._values.append(value)  # both deques are bounded: the oldest entries fall off

    def observe(self, value: float) -> Change | None:
        """Add an outcome value in [0, 1]; return the change it reveals, if any."""
        self._push(value)
        count = self.count
        total = self.total
        prefix = self._prefix
        available = len(prefix) - 1
        threshold = self.threshold
        if count > self.growth_from:
            # A longer history is tested more often: the threshold grows with its logarithm.
            threshold += self.growth * _log(count / self.growth_from)
        entropy = _entropy
        whole = count * entropy(total / count)
        best: Change | None = None
        for window in self.windows:
            before = count - window
            if before < self.min_before or window > available:
                break
            window_sum = total - prefix[-1 - window]
            after_mean = window_sum / window
            before_mean = (total - window_sum) / before
            statistic = whole - before * entropy(before_mean) - window * entropy(after_mean)
            if statistic > threshold and (best is None or statistic > best.statistic):
                kind: ChangeKind = "drop" if after_mean < before_mean else "rise"
                best = Change(kind, window, window_sum, before_mean, after_mean, statistic)
        return None if best is None else self._locate(best, threshold)

    def _locate(self, change: Change, threshold: float) -> Change:
        """Narrow a detected change to the shortest trailing window that shows it.

        The test windows are coarse (a drop 8 outcomes ago may be caught by the 40-window), and
        the path restarts from the window: the shortest window whose statistic crosses the
        threshold in the same direction holds the fewest pre-change outcomes. Its mean is
        biased towards the extreme, which the recovery test allows for. Runs only when a change
        is declared.
        """
        count, total, prefix = self.count, self.total, self._prefix
        whole = count * _entropy(total / count)
        drop = change.kind == "drop"
        for window in range(1, change.window):
            window_sum = total - prefix[-1 - window]
            after_mean = window_sum / window
            before_mean = (total - window_sum) / (count - window)
            if (after_mean < before_mean) != drop:
                continue
            statistic = (
                whole - (count - window) * _entropy(before_mean) - window * _entropy(after_mean)
            )
            if statistic > threshold:
                return Change(change.kind, window, window_sum, before_mean, after_mean, statistic)
        return change

    def prime(self, values: list[float]) -> None:
        """Restart with these outcome values as history, without testing them for a change.

        Used when a path's state is rebuilt from a store at start-up.
        """
        self.reset()
        for value in values:
            self._push(value)

"""Timeline: a goal's outcomes bucketed over a time window (traffic share and rolling success).

A pure function over outcome metadata, like insights: the caller reads the window's outcomes
from a store. Each bucket says how many outcomes each path got (its traffic share) and how each
path was doing at the bucket's end: the success rate of its last ``rolling`` outcomes, so a path
with little traffic still has a rate, and a degradation shows as a falling line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

DEFAULT_ROLLING = 20
MAX_BUCKETS = 1000


class TimedOutcome(Protocol):
    """What a timeline needs of an outcome (satisfied by the store's OutcomeRecord)."""

    path_id: str | None
    success: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class PathPoint:
    """One path in one bucket.

    Attributes:
        outcomes: Outcomes of the path in the bucket.
        successes: How many of them succeeded.
        traffic_share: ``outcomes`` over all outcomes of the bucket (0 for an empty bucket).
        success_rate: ``successes / outcomes``; None without outcomes in the bucket.
        rolling_success_rate: Success rate of the path's last ``rolling`` outcomes of the
            window up to the bucket's end; None before its first outcome in the window.
    """

    outcomes: int
    successes: int
    traffic_share: float
    success_rate: float | None
    rolling_success_rate: float | None


@dataclass(frozen=True, slots=True)
class Bucket:
    """A slice ``[start, end)`` of the window (the last one also holds ``end``).

    ``outcomes`` counts every outcome of the bucket: the paths' plus ``unattributed`` ones
    (stored without a path, or of a path not listed).
    """

    start: float
    end: float
    outcomes: int
    successes: int
    unattributed: int
    paths: dict[str, PathPoint] = field(default_factory=dict)

    @property
    def success_rate(self) -> float | None:
        """Success rate of all the bucket's outcomes; None when it has none."""
        return self.successes / self.outcomes if self.outcomes else None


@dataclass(slots=True)
class _Rolling:
    size: int
    values: deque[bool] = field(default_factory=deque)
    successes: int = 0

    def add(self, success: bool) -> None:
        self.values.append(success)
        self.successes += success
        if len(self.values) > self.size:
            self.successes -= self.values.popleft()

    @property
    def rate(self) -> float | None:
        return self.successes / len(self.values) if self.values else None


def timeline(
    outcomes: Iterable[TimedOutcome],
    path_ids: Sequence[str],
    start: float,
    end: float,
    buckets: int,
    *,
    rolling: int = DEFAULT_ROLLING,
) -> list[Bucket]:
    """Bucket a goal's outcomes over ``[start, end]`` into ``buckets`` equal slices.

    Outcomes before ``start`` are left out; those after ``end`` (another host's clock slightly
    ahead) count in the last bucket, so the buckets add up to every outcome a window query
    returned.

    Args:
        outcomes: The goal's outcomes, in any order.
        path_ids: The goal's paths; each gets a point in every bucket, in this order.
        start: Start of the window (seconds since the epoch).
        end: End of the window; greater than ``start``.
        buckets: Number of slices, 1 to 1000.
        rolling: How many of a path's most recent outcomes its rolling success rate covers.

    Returns:
        The buckets, oldest first.

    Example:
        >>> from types import SimpleNamespace as Outcome
        >>> rows = [Outcome(path_id="a", success=s, created_at=t)
        ...         for t, s in [(1, True), (2, True), (3, False), (4, False)]]
        >>> [b.paths["a"].rolling_success_rate for b in timeline(rows, ["a"], 0, 4, 2)]
        [1.0, 0.5]

    Raises:
        ValueError: an empty window, a bucket count out of range, or ``rolling < 1``.
    """
    if not end > start:
        raise ValueError(f"the window must end after it starts (start={start}, end={end})")
    if not 1 <= buckets <= MAX_BUCKETS:
        raise ValueError(f"buckets must be between 1 and {MAX_BUCKETS}, got {buckets}")
    if rolling < 1:
        raise ValueError(f"rolling must be at least 1, got {rolling}")
    width = (end - start) / buckets
    known = dict.fromkeys(path_ids)
    slots: list[list[TimedOutcome]] = [[] for _ in range(buckets)]
    for outcome in outcomes:
        if outcome.created_at >= start:
            slots[min(int((outcome.created_at - start) / width), buckets - 1)].append(outcome)
    recent = {path_id: _Rolling(rolling) for path_id in known}
    result = []
    for index, slot in enumerate(slots):
        slot.sort(key=lambda o: o.created_at)  # stable: same-time outcomes keep store order
        counts = dict.fromkeys(known, 0)
        wins = dict.fromkeys(known, 0)
        unattributed = 0
        for outcome in slot:
            path_id = outcome.path_id
            if path_id is None or path_id not in known:
                unattributed += 1
                continue
            counts[path_id] += 1
            wins[path_id] += outcome.success
            recent[path_id].add(outcome.success)
        total = len(slot)
        points = {
            path_id: PathPoint(
                outcomes=counts[path_id],
                successes=wins[path_id],
                traffic_share=counts[path_id] / total if total else 0.0,
                success_rate=wins[path_id] / counts[path_id] if counts[path_id] else None,
                rolling_success_rate=recent[path_id].rate,
            )
            for path_id in known
        }
        result.append(
            Bucket(
                start=start + index * width,
                end=end if index == buckets - 1 else start + (index + 1) * width,
                outcomes=total,
                successes=sum(1 for o in slot if o.success),
                unattributed=unattributed,
                paths=points,
            )
        )
    return result

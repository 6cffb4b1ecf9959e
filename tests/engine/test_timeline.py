"""The timeline: outcomes bucketed over a window, with traffic share and rolling success."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kalibr_core import Intelligence, ValidationError
from kalibr_core.engine._timeline import timeline


@dataclass
class Outcome:
    path_id: str | None
    success: bool
    created_at: float


def test_outcomes_fall_into_their_slice_and_the_edges_are_kept():
    outcomes = [
        Outcome("a", True, -1),  # before the window: left out
        Outcome("a", True, 0),  # the start belongs to the first slice
        Outcome("b", False, 2.5),
        Outcome("a", True, 10),  # the end belongs to the last slice
        Outcome("b", True, 11),  # a clock slightly ahead: still counted, in the last slice
    ]
    buckets = timeline(outcomes, ["a", "b"], 0, 10, 4)
    assert [(b.start, b.end) for b in buckets] == [(0, 2.5), (2.5, 5), (5, 7.5), (7.5, 10)]
    assert [b.outcomes for b in buckets] == [1, 1, 0, 2]
    assert [b.paths["a"].outcomes for b in buckets] == [1, 0, 0, 1]
    assert buckets[1].success_rate == 0.0 and buckets[2].success_rate is None


def test_traffic_shares_add_up_with_unattributed_outcomes():
    outcomes = [Outcome("a", True, 1), Outcome("a", False, 2), Outcome("b", True, 3)]
    outcomes += [Outcome(None, True, 4), Outcome("gone", True, 5)]  # no path, unknown path
    (bucket,) = timeline(outcomes, ["a", "b", "c"], 0, 10, 1)
    assert bucket.outcomes == 5 and bucket.unattributed == 2 and bucket.successes == 4
    shares = {path_id: point.traffic_share for path_id, point in bucket.paths.items()}
    assert shares == {"a": 0.4, "b": 0.2, "c": 0.0}
    assert bucket.paths["a"].success_rate == 0.5
    assert bucket.paths["c"].success_rate is None and bucket.paths["c"].rolling_success_rate is None


def test_rolling_success_covers_the_last_outcomes_across_slices():
    # Ten successes in the first slice, then ten failures in the second, nothing in the third.
    outcomes = [Outcome("a", True, 0.05 * i) for i in range(10)]
    outcomes += [Outcome("a", False, 1 + 0.05 * i) for i in range(10)]
    buckets = timeline(reversed(outcomes), ["a"], 0, 3, 3, rolling=10)
    assert [b.paths["a"].rolling_success_rate for b in buckets] == [1.0, 0.0, 0.0]
    halfway = timeline(outcomes[:15], ["a"], 0, 3, 3, rolling=10)
    assert halfway[1].paths["a"].rolling_success_rate == 0.5  # 5 successes, 5 failures
    assert halfway[1].paths["a"].success_rate == 0.0  # the slice itself: failures only


@pytest.mark.parametrize(
    ("start", "end", "buckets", "rolling"),
    [(0, 0, 1, 1), (5, 1, 1, 1), (0, 1, 0, 1), (0, 1, 1001, 1), (0, 1, 1, 0)],
)
def test_invalid_windows_are_refused(start, end, buckets, rolling):
    with pytest.raises(ValueError):
        timeline([], ["a"], start, end, buckets, rolling=rolling)


def test_intelligence_timeline_validates_and_scopes_by_tenant(intel: Intelligence):
    intel.register_path("g", "gpt-4o", tenant="acme")
    intel.report_outcome("t", "g", success=True, model_id="gpt-4o", tenant="acme")
    body = intel.timeline(window_hours=2, buckets=4, tenant="acme")
    assert body["bucket_seconds"] == pytest.approx(1800)
    (goal,) = body["goals"]
    assert [b["outcomes"] for b in goal["buckets"]] == [0, 0, 0, 1]
    assert intel.timeline(tenant="globex")["goals"] == []
    for bad in ({"buckets": True}, {"buckets": 0}, {"rolling": 0}, {"window_hours": 0}):
        with pytest.raises(ValidationError):
            intel.timeline("g", **bad, tenant="acme")

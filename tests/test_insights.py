"""get_insights: structured diagnostics per goal, one scenario per status and signal."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from kalibr_core import Intelligence

SeedOutcomes = Callable[..., None]  # the seed_outcomes fixture (conftest.py)
RunGoal = Callable[..., Counter[str]]  # the run_goal fixture (conftest.py)
GOAL = "resolve_ticket"
GOAL_FIELDS = {
    "goal",
    "status",
    "success_rate",
    "sample_count",
    "trend",
    "trend_delta",
    "confidence",
    "top_failure_modes",
    "paths",
    "param_sensitivity",
    "actionable_signals",
}
SUMMARY_FIELDS = {
    "total_goals",
    "healthy",
    "degrading",
    "failing",
    "insufficient_data",
    "total_outcomes",
}


def goal_entry(intel: Intelligence, goal: str = GOAL, **kwargs: Any) -> dict[str, Any]:
    [entry] = intel.get_insights(goal, **kwargs)["goals"]
    assert entry["goal"] == goal
    return entry


def signals(entry: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [s for s in entry["actionable_signals"] if s["type"] == kind]


def test_the_response_has_the_documented_shape(
    intel: Intelligence, seed_outcomes: SeedOutcomes
) -> None:
    intel.register_path(GOAL, "gpt-4o")
    seed_outcomes(intel, GOAL, {"gpt-4o": 0.9}, n=30, cost={"gpt-4o": 0.01})
    insights = intel.get_insights()
    assert insights["schema_version"] == "1.0"
    assert insights["tenant_id"] == "default"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", insights["generated_at"])
    assert insights["window_hours"] == 168
    assert set(insights["cross_goal_summary"]) == SUMMARY_FIELDS
    [entry] = insights["goals"]
    assert set(entry) >= GOAL_FIELDS
    assert entry["sample_count"] == 30
    assert entry["success_rate"] == pytest.approx(0.9)
    assert entry["trend"] in {"improving", "stable", "degrading"}
    assert 0.0 <= entry["confidence"] <= 1.0
    [path] = entry["paths"]
    assert path["model_id"] == "gpt-4o"
    assert path["sample_count"] == 30
    assert path["success_rate"] == pytest.approx(0.9)
    assert path["avg_cost_usd"] == pytest.approx(0.01)
    assert path["trend"] in {"improving", "stable", "degrading"}
    for signal in entry["actionable_signals"]:
        assert set(signal) >= {"type", "severity", "data"}
        assert signal["severity"] in {"info", "warning", "critical"}


def test_few_outcomes_are_insufficient_data(
    intel: Intelligence, seed_outcomes: SeedOutcomes
) -> None:
    intel.register_path(GOAL, "gpt-4o")
    seed_outcomes(intel, GOAL, {"gpt-4o": 1.0}, n=5)
    entry = goal_entry(intel)
    assert entry["status"] == "insufficient_data"
    assert entry["sample_count"] == 5
    assert not signals(entry, "goal_healthy")


def test_a_goal_without_outcomes(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    entry = goal_entry(intel)
    assert entry["status"] == "insufficient_data"
    assert entry["sample_count"] == 0
    assert entry["success_rate"] is None
    assert signals(entry, "low_confidence")


def test_a_healthy_goal(intel: Intelligence, seed_outcomes: SeedOutcomes) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.register_path(GOAL, "claude")
    seed_outcomes(intel, GOAL, {"gpt-4o": 0.92, "claude": 0.9}, n=50)
    entry = goal_entry(intel)
    assert entry["status"] == "healthy"
    [healthy] = signals(entry, "goal_healthy")
    assert healthy["severity"] == "info"
    assert not signals(entry, "path_underperforming")
    assert not signals(entry, "drift_detected")


def test_a_failing_goal(intel: Intelligence, seed_outcomes: SeedOutcomes) -> None:
    intel.register_path(GOAL, "gpt-4o")
    seed_outcomes(intel, GOAL, {"gpt-4o": 0.3}, n=40)
    entry = goal_entry(intel)
    assert entry["status"] == "failing"
    assert entry["success_rate"] == pytest.approx(0.3)
    assert not signals(entry, "goal_healthy")


def test_path_underperforming(intel: Intelligence, seed_outcomes: SeedOutcomes) -> None:
    intel.register_path(GOAL, "strong")
    intel.register_path(GOAL, "weak")
    intel.register_path(GOAL, "close")
    seed_outcomes(intel, GOAL, {"strong": 0.95, "weak": 0.6, "close": 0.85}, n=40)
    entry = goal_entry(intel)
    [signal] = signals(entry, "path_underperforming")
    assert signal["data"]["model_id"] == "weak"
    assert signal["data"]["gap"] == pytest.approx(0.35)
    assert signal["severity"] == "critical"
    assert not signals(entry, "goal_healthy")


def test_a_gap_within_15_points_is_not_underperforming(
    intel: Intelligence, seed_outcomes: SeedOutcomes
) -> None:
    intel.register_path(GOAL, "a")
    intel.register_path(GOAL, "b")
    seed_outcomes(intel, GOAL, {"a": 0.95, "b": 0.825}, n=40)
    assert not signals(goal_entry(intel), "path_underperforming")


def test_failure_mode_dominant(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    categories = ["timeout"] * 7 + ["tool_error"] * 2 + ["rate_limited"]
    for i, category in enumerate(categories):
        intel.report_outcome(
            f"f{i}", GOAL, success=False, failure_category=category, model_id="gpt-4o"
        )
    for i in range(20):
        intel.report_outcome(f"s{i}", GOAL, success=True, model_id="gpt-4o")
    entry = goal_entry(intel)
    assert entry["top_failure_modes"][0] == {"category": "timeout", "count": 7, "share": 0.7}
    assert [m["category"] for m in entry["top_failure_modes"]] == [
        "timeout",
        "tool_error",
        "rate_limited",
    ]
    [signal] = signals(entry, "failure_mode_dominant")
    assert signal["data"]["category"] == "timeout"
    assert signal["data"]["share"] == pytest.approx(0.7)


def test_no_dominant_failure_mode_at_half(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    for i, category in enumerate(["timeout"] * 5 + ["tool_error"] * 5):
        intel.report_outcome(
            f"f{i}", GOAL, success=False, failure_category=category, model_id="gpt-4o"
        )
    assert not signals(goal_entry(intel), "failure_mode_dominant")


def test_param_sensitivity_detected(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o", params={"temperature": 0.2})
    intel.register_path(GOAL, "gpt-4o", params={"temperature": 0.9})
    for i in range(40):
        intel.report_outcome(
            f"c{i}",
            GOAL,
            success=i % 10 != 0,
            model_id="gpt-4o",
            execution_params={"temperature": 0.2},
        )
        intel.report_outcome(
            f"h{i}",
            GOAL,
            success=i % 2 == 0,
            model_id="gpt-4o",
            execution_params={"temperature": 0.9},
        )
    entry = goal_entry(intel)
    [sensitivity] = entry["param_sensitivity"]
    assert sensitivity["param"] == "temperature"
    assert sensitivity["best_value"] == 0.2
    assert sensitivity["spread"] == pytest.approx(0.4)
    assert sensitivity["significant"] is True
    [signal] = signals(entry, "param_sensitivity_detected")
    assert signal["data"]["param"] == "temperature"
    assert signal["data"]["best_value"] == 0.2


def test_a_small_param_spread_is_not_significant(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o", params={"temperature": 0.2})
    intel.register_path(GOAL, "gpt-4o", params={"temperature": 0.3})
    for i in range(40):
        for t, rate in ((0.2, 0.9), (0.3, 0.825)):  # a 7.5 point spread
            intel.report_outcome(
                f"{t}-{i}",
                GOAL,
                success=i < rate * 40,
                model_id="gpt-4o",
                execution_params={"temperature": t},
            )
    assert not signals(goal_entry(intel), "param_sensitivity_detected")


def test_drift_detected_after_a_degradation(intel: Intelligence, run_goal: RunGoal) -> None:
    intel.register_path(GOAL, "primary")
    intel.register_path(GOAL, "backup")
    run_goal(intel, GOAL, {"primary": 0.95, "backup": 0.7}, n=200, seed=1)
    run_goal(intel, GOAL, {"primary": 0.05, "backup": 0.7}, n=60, seed=2)
    entry = goal_entry(intel)
    drift = signals(entry, "drift_detected")
    assert [s["data"]["model_id"] for s in drift] == ["primary"]
    assert entry["status"] in {"degrading", "failing"}
    assert entry["status"] == "degrading"  # overall success is still above one half
    primary = next(p for p in entry["paths"] if p["model_id"] == "primary")
    assert primary["trend"] == "degrading"
    assert not signals(entry, "goal_healthy")


def test_cost_inefficiency(intel: Intelligence, seed_outcomes: SeedOutcomes) -> None:
    intel.register_path(GOAL, "premium")
    intel.register_path(GOAL, "budget")
    seed_outcomes(intel, GOAL, {"premium": 0.9}, n=80, cost={"premium": 0.03})
    seed_outcomes(intel, GOAL, {"budget": 0.88}, n=25, cost={"budget": 0.002})
    [signal] = signals(goal_entry(intel), "cost_inefficiency")
    assert signal["data"]["model_id"] == "premium"
    assert signal["data"]["cheaper_model_id"] == "budget"
    assert signal["data"]["cheaper_cost_usd"] == pytest.approx(0.002)


def test_a_cheaper_but_worse_path_is_not_a_cost_inefficiency(
    intel: Intelligence, seed_outcomes: SeedOutcomes
) -> None:
    intel.register_path(GOAL, "premium")
    intel.register_path(GOAL, "budget")
    seed_outcomes(intel, GOAL, {"premium": 0.95}, n=80, cost={"premium": 0.03})
    seed_outcomes(intel, GOAL, {"budget": 0.8}, n=25, cost={"budget": 0.002})
    assert not signals(goal_entry(intel), "cost_inefficiency")


def test_low_confidence(intel: Intelligence, seed_outcomes: SeedOutcomes) -> None:
    intel.register_path(GOAL, "established")
    intel.register_path(GOAL, "newcomer")
    seed_outcomes(intel, GOAL, {"established": 0.9}, n=50)
    seed_outcomes(intel, GOAL, {"newcomer": 0.9}, n=7)
    entry = goal_entry(intel)
    [signal] = signals(entry, "low_confidence")
    assert signal["data"]["model_id"] == "newcomer"
    assert signal["data"]["sample_count"] == 7
    # Low confidence on a new path does not stop the goal being healthy.
    assert entry["status"] == "healthy"


def test_a_disabled_path_raises_no_low_confidence(
    intel: Intelligence, seed_outcomes: SeedOutcomes
) -> None:
    intel.register_path(GOAL, "established")
    retired = intel.register_path(GOAL, "retired")["path_id"]
    intel.disable_path(retired)
    seed_outcomes(intel, GOAL, {"established": 0.9}, n=50)
    assert not signals(goal_entry(intel), "low_confidence")


def test_window_hours_limits_the_outcomes(intel: Intelligence, seed_outcomes: SeedOutcomes) -> None:
    intel.register_path(GOAL, "gpt-4o")
    seed_outcomes(intel, GOAL, {"gpt-4o": 0.9}, n=30)
    time.sleep(0.05)
    seed_outcomes(intel, GOAL, {"gpt-4o": 1.0}, n=4, prefix="recent")
    assert goal_entry(intel)["sample_count"] == 34
    recent = intel.get_insights(GOAL, window_hours=0.04 / 3600)
    assert recent["window_hours"] == pytest.approx(0.04 / 3600)
    assert recent["goals"][0]["sample_count"] == 4


def test_cross_goal_summary_counts(intel: Intelligence, seed_outcomes: SeedOutcomes) -> None:
    for goal in ("healthy_goal", "failing_goal", "new_goal"):
        intel.register_path(goal, "gpt-4o")
    seed_outcomes(intel, "healthy_goal", {"gpt-4o": 0.9}, n=40)
    seed_outcomes(intel, "failing_goal", {"gpt-4o": 0.2}, n=30)
    seed_outcomes(intel, "new_goal", {"gpt-4o": 1.0}, n=3)
    insights = intel.get_insights()
    statuses = {g["goal"]: g["status"] for g in insights["goals"]}
    assert statuses == {
        "healthy_goal": "healthy",
        "failing_goal": "failing",
        "new_goal": "insufficient_data",
    }
    assert insights["cross_goal_summary"] == {
        "total_goals": 3,
        "healthy": 1,
        "degrading": 0,
        "failing": 1,
        "insufficient_data": 1,
        "total_outcomes": 73,
    }
    only = intel.get_insights("failing_goal")
    assert [g["goal"] for g in only["goals"]] == ["failing_goal"]
    assert only["cross_goal_summary"]["total_goals"] == 1


def test_insights_are_per_tenant(intel: Intelligence, seed_outcomes: SeedOutcomes) -> None:
    intel.register_path(GOAL, "gpt-4o")
    seed_outcomes(intel, GOAL, {"gpt-4o": 0.9}, n=30)
    other = intel.get_insights(tenant="acme")
    assert other["tenant_id"] == "acme"
    assert other["goals"] == []
    assert other["cross_goal_summary"]["total_outcomes"] == 0

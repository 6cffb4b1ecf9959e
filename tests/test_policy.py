"""get_policy, get_alternative, stats and the per-goal exploration config."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from kalibr_core import (
    ExplorationConfig,
    Intelligence,
    NoPathAvailableError,
    NotFoundError,
)

SeedOutcomes = Callable[..., None]  # the seed_outcomes fixture (conftest.py)
GOAL = "book_meeting"
RATES = {"premium": 0.95, "standard": 0.85, "budget": 0.6}
COST = {"premium": 0.05, "standard": 0.01, "budget": 0.001}
LATENCY = {"premium": 3000.0, "standard": 1200.0, "budget": 300.0}


@pytest.fixture
def market(intel: Intelligence, seed_outcomes: SeedOutcomes) -> Intelligence:
    """Three paths: premium (best, dear, slow), standard, budget (worst, cheap, fast)."""
    intel.register_path(GOAL, "premium", tool_id="calendar_api", params={"temperature": 0.3})
    intel.register_path(GOAL, "standard")
    intel.register_path(GOAL, "budget")
    seed_outcomes(intel, GOAL, RATES, n=60, cost=COST, latency=LATENCY)
    return intel


def test_policy_recommends_the_best_path(market: Intelligence) -> None:
    policy = market.get_policy(GOAL)
    assert policy["goal"] == GOAL
    assert policy["recommended_model"] == "premium"
    assert policy["recommended_tool"] == "calendar_api"
    assert policy["recommended_params"] == {"temperature": 0.3}
    assert policy["outcome_success_rate"] == pytest.approx(0.95, abs=0.01)
    assert policy["outcome_sample_count"] == 60
    assert 0.5 < policy["confidence"] <= 1.0
    assert 0.0 <= policy["risk_score"] <= 1.0
    assert policy["source"] == "realtime"
    assert "premium" in policy["reasoning"]
    assert [a["model_id"] for a in policy["alternatives"]] == ["standard", "budget"]
    standard = policy["alternatives"][0]
    assert standard["success_rate"] == pytest.approx(0.85, abs=0.01)
    assert standard["avg_cost_usd"] == pytest.approx(0.01)
    assert standard["avg_latency_ms"] == pytest.approx(1200)


def test_policy_is_deterministic(market: Intelligence) -> None:
    first = market.get_policy(GOAL)
    for _ in range(5):
        assert market.get_policy(GOAL) == first


def test_policy_options_trim_the_recommendation(market: Intelligence) -> None:
    policy = market.get_policy(GOAL, include_tools=False, include_params=["top_p"])
    assert policy["recommended_tool"] is None
    assert policy["recommended_params"] is None
    assert market.get_policy(GOAL, include_params=["temperature"])["recommended_params"] == {
        "temperature": 0.3
    }


@pytest.mark.parametrize(
    ("constraints", "expected"),
    [
        ({"max_cost_usd": 0.02}, "standard"),
        ({"max_latency_ms": 500}, "budget"),
        ({"min_quality": 0.9}, "premium"),
        ({"max_cost_usd": 0.02, "min_quality": 0.8}, "standard"),
        ({"max_cost_usd": 1.0, "max_latency_ms": 10_000, "min_quality": 0.0}, "premium"),
    ],
)
def test_policy_only_recommends_paths_meeting_every_constraint(
    market: Intelligence, constraints: dict[str, float], expected: str
) -> None:
    policy = market.get_policy(GOAL, constraints=constraints)
    assert policy["recommended_model"] == expected
    assert policy["constraints"] == constraints
    for alternative in policy["alternatives"]:
        if "max_cost_usd" in constraints:
            assert alternative["avg_cost_usd"] <= constraints["max_cost_usd"]
        if "min_quality" in constraints:
            assert alternative["success_rate"] >= constraints["min_quality"]


def test_policy_says_so_when_no_path_meets_the_constraints(market: Intelligence) -> None:
    policy = market.get_policy(GOAL, constraints={"max_cost_usd": 0.02, "min_quality": 0.9})
    assert policy["recommended_model"] is None
    assert policy["recommended_tool"] is None
    assert policy["outcome_success_rate"] is None
    assert policy["alternatives"] == []
    reasoning = policy["reasoning"]
    assert "no path meets the constraints" in reasoning
    assert "min_quality" in reasoning
    assert "max_cost_usd" in reasoning


def test_the_reasoning_names_what_the_constraints_excluded(market: Intelligence) -> None:
    reasoning = market.get_policy(GOAL, constraints={"max_cost_usd": 0.02})["reasoning"]
    assert "premium" in reasoning
    assert "max_cost_usd" in reasoning


def test_policy_without_outcomes_raises_not_found(intel: Intelligence) -> None:
    with pytest.raises(NotFoundError, match=GOAL):
        intel.get_policy(GOAL)
    intel.register_path(GOAL, "gpt-4o")
    intel.decide(GOAL)
    with pytest.raises(NotFoundError):
        intel.get_policy(GOAL)


def test_historical_policy_uses_only_the_window(
    intel: Intelligence, seed_outcomes: SeedOutcomes
) -> None:
    intel.register_path(GOAL, "old-favourite")
    intel.register_path(GOAL, "newcomer")
    seed_outcomes(intel, GOAL, {"old-favourite": 0.95, "newcomer": 0.2}, n=40)
    time.sleep(0.05)
    seed_outcomes(intel, GOAL, {"newcomer": 0.9}, n=20, prefix="recent")
    assert intel.get_policy(GOAL)["recommended_model"] == "old-favourite"
    recent = intel.get_policy(GOAL, window_hours=0.04 / 3600)
    assert recent["source"] == "historical"
    assert recent["recommended_model"] == "newcomer"
    assert recent["outcome_sample_count"] == 20


def test_alternative_excludes_the_failed_models(market: Intelligence) -> None:
    first = market.get_alternative(GOAL, exclude_models=["premium"])
    assert first["recommended_model"] == "standard"
    assert first["remaining_alternatives"] == 1
    assert "premium" in first["reasoning"]
    second = market.get_alternative(GOAL, exclude_models=["premium", "standard"])
    assert second["recommended_model"] == "budget"
    assert second["remaining_alternatives"] == 0
    with pytest.raises(NoPathAvailableError, match="exhausted"):
        market.get_alternative(GOAL, exclude_models=["premium", "standard", "budget"])


def test_alternative_respects_constraints_and_disabled_paths(market: Intelligence) -> None:
    cheap = market.get_alternative(
        GOAL, exclude_models=["standard"], constraints={"max_cost_usd": 0.02}
    )
    assert cheap["recommended_model"] == "budget"
    with pytest.raises(NoPathAvailableError):
        market.get_alternative(GOAL, exclude_models=["budget"], constraints={"max_latency_ms": 500})
    budget = next(p for p in market.list_paths(GOAL)["paths"] if p["model_id"] == "budget")
    market.disable_path(budget["path_id"])
    with pytest.raises(NoPathAvailableError):
        market.get_alternative(GOAL, exclude_models=["premium", "standard"])


def test_alternative_with_nothing_excluded_is_the_policy(market: Intelligence) -> None:
    assert market.get_alternative(GOAL, exclude_models=[])["recommended_model"] == "premium"


def test_stats_reports_per_path_performance(market: Intelligence) -> None:
    for _ in range(10):
        market.decide(GOAL)
    stats = market.stats(GOAL)
    assert stats["goal"] == GOAL
    assert stats["total_outcomes"] == 180
    assert stats["success_rate"] == pytest.approx((57 + 51 + 36) / 180, abs=1e-4)
    assert stats["decisions"] == 10
    assert stats["config"] == ExplorationConfig().to_dict()
    rows = {p["model_id"]: p for p in stats["paths"]}
    assert rows["standard"]["total_outcomes"] == 60
    assert rows["standard"]["success_rate"] == pytest.approx(0.85)
    assert rows["standard"]["avg_cost_usd"] == pytest.approx(0.01)
    assert rows["standard"]["avg_latency_ms"] == pytest.approx(1200)
    assert rows["budget"]["posterior_mean"] == pytest.approx(37 / 62, abs=1e-4)
    assert sum(p["decisions"] for p in rows.values()) == 10


# -- exploration config --------------------------------------------------------------------------
def test_exploration_config_defaults(intel: Intelligence) -> None:
    assert intel.get_exploration_config(GOAL) == {
        "goal": GOAL,
        "exploration_rate": None,
        "min_samples_before_exploit": 20,
        "rollback_threshold": 0.3,
        "staleness_days": 7.0,
        "exploration_on_high_risk": False,
    }


def test_exploration_config_changes_only_what_is_set(intel: Intelligence) -> None:
    intel.set_exploration_config(GOAL, exploration_rate=0.05)
    result = intel.set_exploration_config(GOAL, min_samples_before_exploit=50)
    assert result["exploration_rate"] == 0.05
    assert result["min_samples_before_exploit"] == 50
    assert intel.get_exploration_config(GOAL) == result
    assert intel.get_exploration_config("other_goal")["exploration_rate"] is None
    assert intel.get_exploration_config("other_goal")["min_samples_before_exploit"] == 20
    # An explicit None goes back to automatic exploration.
    assert intel.set_exploration_config(GOAL, exploration_rate=None)["exploration_rate"] is None
    assert intel.get_exploration_config(GOAL)["min_samples_before_exploit"] == 50


def test_exploration_config_is_persisted(tmp_db: str) -> None:
    with Intelligence(tmp_db) as intel:
        intel.set_exploration_config(GOAL, exploration_rate=0.1, rollback_threshold=0.2)
    with Intelligence(tmp_db) as reopened:
        config = reopened.get_exploration_config(GOAL)
        assert config["exploration_rate"] == 0.1
        assert config["rollback_threshold"] == 0.2
        assert reopened.stats(GOAL)["config"]["exploration_rate"] == 0.1


def test_exploration_config_reaches_a_loaded_goal(intel: Intelligence) -> None:
    intel.register_path(GOAL, "a")
    intel.register_path(GOAL, "b")
    intel.decide(GOAL)
    intel.set_exploration_config(GOAL, exploration_rate=1.0)
    assert all(intel.decide(GOAL)["exploration"] for _ in range(20))
    assert intel.stats(GOAL)["config"]["exploration_rate"] == 1.0


def test_reads_about_unregistered_goals_keep_nothing_in_memory(intel: Intelligence) -> None:
    # Anyone can ask about any name (a service's endpoints): answered, not remembered.
    intel.register_path(GOAL, "gpt-4o")
    intel.decide(GOAL)
    loaded = len(intel._scopes)
    for i in range(50):
        name = f"never_registered_{i}"
        assert intel.stats(name)["paths"] == []
        with pytest.raises(NotFoundError):
            intel.get_policy(name)
        assert intel.get_insights(name)["goals"][0]["goal"] == name
        with pytest.raises(NoPathAvailableError):
            intel.decide(name)
    assert len(intel._scopes) == loaded
    later = "registered_later"
    assert intel.stats(later)["paths"] == []
    intel.register_path(later, "gpt-4o")
    assert [p["model_id"] for p in intel.stats(later)["paths"]] == ["gpt-4o"]
    assert intel.decide(later)["model_id"] == "gpt-4o"

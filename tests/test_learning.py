"""Learning through the public API: traffic follows outcomes, degradations, rollback, cost ties.

The scenarios use clear-cut gaps and generous margins, so they hold for any reasonable tuning of
the engine; each runs a few seeds so a lucky draw cannot make one pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from kalibr_core import Intelligence

SeedOutcomes = Callable[..., None]  # the seed_outcomes fixture (conftest.py)
RunGoal = Callable[..., Counter[str]]  # the run_goal fixture (conftest.py)
GOAL = "extract_company"
SEEDS = (1, 2, 3)


def _fresh(seed: int, *models: str) -> Intelligence:
    intel = Intelligence(":memory:", seed=seed)
    for model in models:
        intel.register_path(GOAL, model)
    return intel


@pytest.mark.parametrize("seed", SEEDS)
def test_traffic_shifts_to_the_better_path(seed: int, run_goal: RunGoal) -> None:
    with _fresh(seed, "good", "mediocre") as intel:
        rates = {"good": 0.9, "mediocre": 0.5}
        run_goal(intel, GOAL, rates, n=150, seed=seed)
        later = run_goal(intel, GOAL, rates, n=200, seed=seed + 100)
        assert later["good"] / 200 > 0.85
        policy = intel.get_policy(GOAL)
        assert policy["recommended_model"] == "good"
        assert policy["outcome_success_rate"] == pytest.approx(0.9, abs=0.1)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_degraded_path_loses_its_traffic_quickly(seed: int, run_goal: RunGoal) -> None:
    with _fresh(seed, "primary", "backup") as intel:
        run_goal(intel, GOAL, {"primary": 0.9, "backup": 0.5}, n=300, seed=seed)
        before = run_goal(intel, GOAL, {"primary": 0.9, "backup": 0.5}, n=100, seed=seed + 1)
        assert before["primary"] > 85
        # The provider breaks: primary now succeeds 10% of the time.
        broken = {"primary": 0.1, "backup": 0.5}
        first = run_goal(intel, GOAL, broken, n=100, seed=seed + 2)
        after = run_goal(intel, GOAL, broken, n=100, seed=seed + 3)
        assert first["primary"] < 50, first
        assert after["primary"] < 25, after
        row = next(p for p in intel.stats(GOAL)["paths"] if p["model_id"] == "primary")
        assert row["trend"] == "degrading"
        assert intel.get_policy(GOAL)["recommended_model"] == "backup"


def test_a_recovered_path_wins_its_traffic_back(run_goal: RunGoal) -> None:
    finals = []
    for seed in SEEDS:
        with _fresh(seed, "primary", "backup") as intel:
            run_goal(intel, GOAL, {"primary": 0.9, "backup": 0.6}, n=200, seed=seed)
            run_goal(intel, GOAL, {"primary": 0.05, "backup": 0.6}, n=150, seed=seed + 1)
            healed = {"primary": 0.95, "backup": 0.6}
            # Probes of a demoted path back off, so noticing a recovery takes a while.
            run_goal(intel, GOAL, healed, n=2500, seed=seed + 2)
            finals.append(run_goal(intel, GOAL, healed, n=200, seed=seed + 3))
    assert all(final["primary"] > 100 for final in finals), finals


@pytest.mark.parametrize("seed", SEEDS)
def test_a_path_far_below_the_rollback_threshold_is_rolled_back_but_probed(
    seed: int, seed_outcomes: SeedOutcomes, run_goal: RunGoal
) -> None:
    with _fresh(seed, "healthy", "broken") as intel:
        seed_outcomes(intel, GOAL, {"healthy": 0.9, "broken": 0.05}, n=30)
        row = next(p for p in intel.stats(GOAL)["paths"] if p["model_id"] == "broken")
        assert row["rolled_back"] is True
        assert row["demoted"] is True
        reasons: Counter[str] = Counter()

        def note(_: int, decision: dict[str, Any]) -> None:
            if decision["model_id"] == "broken":
                reasons[decision["reason"]] += 1
                assert decision["exploration"] is True

        chosen = run_goal(
            intel, GOAL, {"healthy": 0.9, "broken": 0.05}, n=1000, seed=seed, on_decision=note
        )
        assert 1 <= chosen["broken"] <= 50, chosen
        assert set(reasons) == {"exploration"}
        assert intel.get_policy(GOAL)["recommended_model"] == "healthy"


def test_rollback_needs_min_samples(intel: Intelligence, seed_outcomes: SeedOutcomes) -> None:
    intel.register_path(GOAL, "healthy")
    intel.register_path(GOAL, "broken")
    seed_outcomes(intel, GOAL, {"healthy": 0.9, "broken": 0.0}, n=10)
    row = next(p for p in intel.stats(GOAL)["paths"] if p["model_id"] == "broken")
    assert row["rolled_back"] is False


def test_the_rollback_threshold_is_configurable(
    intel: Intelligence, seed_outcomes: SeedOutcomes
) -> None:
    intel.register_path(GOAL, "healthy")
    intel.register_path(GOAL, "weak")
    intel.set_exploration_config(GOAL, rollback_threshold=0.7)
    seed_outcomes(intel, GOAL, {"healthy": 0.95, "weak": 0.5}, n=40)
    row = next(p for p in intel.stats(GOAL)["paths"] if p["model_id"] == "weak")
    assert row["rolled_back"] is True


@pytest.mark.parametrize("seed", SEEDS)
def test_cost_breaks_ties_between_equally_good_paths(
    seed: int, seed_outcomes: SeedOutcomes, run_goal: RunGoal
) -> None:
    # Registered first, so the expensive path is the "best" one on an exact tie.
    with _fresh(seed, "premium", "budget") as intel:
        cost = {"premium": 0.02, "budget": 0.001}
        rates = {"premium": 0.91, "budget": 0.90}
        seed_outcomes(intel, GOAL, rates, n=500, cost=cost)
        reasons: Counter[str] = Counter()
        chosen = run_goal(
            intel,
            GOAL,
            rates,
            n=300,
            seed=seed,
            cost=cost,
            on_decision=lambda _, d: reasons.update([d["reason"]]),
        )
        assert chosen["budget"] > 210, chosen
        assert reasons["cost_optimized"] > 0, reasons
        policy = intel.get_policy(GOAL)
        assert policy["recommended_model"] == "budget"


@pytest.mark.parametrize("seed", SEEDS)
def test_success_dominates_cost(seed: int, seed_outcomes: SeedOutcomes, run_goal: RunGoal) -> None:
    with _fresh(seed, "premium", "budget") as intel:
        cost = {"premium": 0.02, "budget": 0.001}
        rates = {"premium": 0.95, "budget": 0.70}
        seed_outcomes(intel, GOAL, rates, n=300, cost=cost)
        chosen = run_goal(intel, GOAL, rates, n=300, seed=seed, cost=cost)
        assert chosen["premium"] > 270, chosen
        assert intel.get_policy(GOAL)["recommended_model"] == "premium"


@pytest.mark.parametrize("seed", SEEDS)
def test_exploration_rate_one_gives_uniform_traffic(seed: int, seed_outcomes: SeedOutcomes) -> None:
    with _fresh(seed, "a", "b", "c") as intel:
        intel.set_exploration_config(GOAL, exploration_rate=1.0)
        seed_outcomes(intel, GOAL, {"a": 0.95, "b": 0.6, "c": 0.5}, n=40)
        decisions = [intel.decide(GOAL) for _ in range(900)]
        chosen = Counter(d["model_id"] for d in decisions)
        for model in ("a", "b", "c"):
            assert 230 <= chosen[model] <= 370, chosen
        assert all(d["exploration"] for d in decisions)
        assert {d["reason"] for d in decisions} == {"exploration"}


@pytest.mark.parametrize("seed", SEEDS)
def test_explicit_exploration_rate_adds_that_share_of_exploration(
    seed: int, seed_outcomes: SeedOutcomes
) -> None:
    with _fresh(seed, "a", "b") as intel:
        seed_outcomes(intel, GOAL, {"a": 0.95, "b": 0.3}, n=200)
        baseline = Counter(intel.decide(GOAL)["model_id"] for _ in range(500))
        intel.set_exploration_config(GOAL, exploration_rate=0.4)
        explored = Counter(intel.decide(GOAL)["model_id"] for _ in range(1000))
        assert baseline["b"] < 25
        # About half of 40% uniform exploration lands on b.
        assert 130 <= explored["b"] <= 280, explored


@pytest.mark.parametrize("seed", SEEDS)
def test_high_risk_tasks_never_explore(seed: int, seed_outcomes: SeedOutcomes) -> None:
    with _fresh(seed, "a", "b", "c") as intel:
        seed_outcomes(intel, GOAL, {"a": 0.6, "b": 0.9, "c": 0.1}, n=30)  # c is rolled back
        intel.set_exploration_config(GOAL, exploration_rate=1.0)
        decisions = [intel.decide(GOAL, task_risk_level="high") for _ in range(300)]
        assert {d["model_id"] for d in decisions} == {"b"}
        assert not any(d["exploration"] for d in decisions)
        assert "exploration" not in {d["reason"] for d in decisions}


def test_high_risk_tasks_explore_when_allowed(
    intel: Intelligence, seed_outcomes: SeedOutcomes
) -> None:
    intel.register_path(GOAL, "a")
    intel.register_path(GOAL, "b")
    seed_outcomes(intel, GOAL, {"a": 0.6, "b": 0.9}, n=30)
    intel.set_exploration_config(GOAL, exploration_rate=1.0, exploration_on_high_risk=True)
    decisions = [intel.decide(GOAL, task_risk_level="high") for _ in range(200)]
    assert Counter(d["model_id"] for d in decisions)["a"] > 50
    assert any(d["exploration"] for d in decisions)


def test_learning_is_per_goal(intel: Intelligence, seed_outcomes: SeedOutcomes) -> None:
    for goal in ("summarize_email", "summarize_transcript"):
        intel.register_path(goal, "model-a")
        intel.register_path(goal, "model-b")
    seed_outcomes(intel, "summarize_email", {"model-a": 0.95, "model-b": 0.3}, n=40)
    seed_outcomes(intel, "summarize_transcript", {"model-a": 0.3, "model-b": 0.95}, n=40)
    assert intel.get_policy("summarize_email")["recommended_model"] == "model-a"
    assert intel.get_policy("summarize_transcript")["recommended_model"] == "model-b"
    email = Counter(intel.decide("summarize_email")["model_id"] for _ in range(100))
    transcript = Counter(intel.decide("summarize_transcript")["model_id"] for _ in range(100))
    assert email["model-a"] > 85
    assert transcript["model-b"] > 85


def test_a_path_registered_later_gets_tried(
    intel: Intelligence, seed_outcomes: SeedOutcomes, run_goal: RunGoal
) -> None:
    intel.register_path(GOAL, "incumbent")
    seed_outcomes(intel, GOAL, {"incumbent": 0.7}, n=100)
    intel.decide(GOAL)
    intel.register_path(GOAL, "newcomer")
    chosen = run_goal(intel, GOAL, {"incumbent": 0.7, "newcomer": 0.95}, n=600, seed=5)
    assert chosen["newcomer"] > 300, chosen

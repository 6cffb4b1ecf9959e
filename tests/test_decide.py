"""decide(): the routing decision, its fields, its reasons, and the recorded decision log."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable

import pytest

from kalibr_core import Intelligence, NoPathAvailableError, ValidationError

SeedOutcomes = Callable[..., None]  # the seed_outcomes fixture (conftest.py)
GOAL = "book_meeting"
DECISION_FIELDS = {
    "trace_id",
    "path_id",
    "model_id",
    "tool_id",
    "params",
    "goal",
    "pipeline_id",
    "reason",
    "confidence",
    "exploration",
    "success_rate",
    "sample_count",
}


def test_a_decision_has_the_spec_fields(intel: Intelligence) -> None:
    path = intel.register_path(GOAL, "gpt-4o", tool_id="calendar_api", params={"temperature": 0.3})
    decision = intel.decide(GOAL, task_risk_level="low")
    assert set(decision) == DECISION_FIELDS
    assert re.fullmatch(r"[0-9a-f]{32}", decision["trace_id"])
    assert decision["path_id"] == path["path_id"]
    assert decision["model_id"] == "gpt-4o"
    assert decision["tool_id"] == "calendar_api"
    assert decision["params"] == {"temperature": 0.3}
    assert decision["goal"] == GOAL
    assert decision["pipeline_id"] is None
    assert decision["reason"] == "fallback"
    assert decision["exploration"] is False
    assert 0.0 <= decision["confidence"] <= 1.0
    assert 0.0 <= decision["success_rate"] <= 1.0
    assert decision["sample_count"] == 0


def test_a_path_without_tools_or_params(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    decision = intel.decide(GOAL)
    assert decision["tool_id"] is None
    assert decision["params"] == {}


def test_trace_ids_are_unique(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.register_path(GOAL, "claude-sonnet-4-20250514")
    ids = [intel.decide(GOAL)["trace_id"] for _ in range(500)]
    assert len(set(ids)) == 500
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in ids)


def test_the_returned_params_are_a_copy(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o", params={"temperature": 0.3})
    intel.decide(GOAL)["params"]["temperature"] = 2.0
    assert intel.decide(GOAL)["params"] == {"temperature": 0.3}


def test_no_registered_path_raises(intel: Intelligence) -> None:
    with pytest.raises(NoPathAvailableError, match=GOAL) as excinfo:
        intel.decide(GOAL)
    assert excinfo.value.goal == GOAL
    assert isinstance(excinfo.value, LookupError)


def test_all_paths_disabled_raises(intel: Intelligence) -> None:
    path_id = intel.register_path(GOAL, "gpt-4o")["path_id"]
    intel.disable_path(path_id)
    with pytest.raises(NoPathAvailableError):
        intel.decide(GOAL)


def test_candidate_model_ids_restrict_the_choice(intel: Intelligence) -> None:
    for model in ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-20250514"):
        intel.register_path(GOAL, model)
    chosen = Counter(
        intel.decide(GOAL, candidate_model_ids=["gpt-4o-mini", "claude-sonnet-4-20250514"])[
            "model_id"
        ]
        for _ in range(200)
    )
    assert set(chosen) <= {"gpt-4o-mini", "claude-sonnet-4-20250514"}
    assert {intel.decide(GOAL, candidate_model_ids=["gpt-4o"])["model_id"] for _ in range(20)} == {
        "gpt-4o"
    }
    with pytest.raises(NoPathAvailableError, match="unknown-model"):
        intel.decide(GOAL, candidate_model_ids=["unknown-model"])
    with pytest.raises(ValidationError, match="candidate_model_ids is empty"):
        intel.decide(GOAL, candidate_model_ids=[])  # a mistake, not "no path available"


def test_nothing_is_called_optimal_while_learning(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.register_path(GOAL, "gpt-4o-mini")
    reasons = Counter(intel.decide(GOAL)["reason"] for _ in range(20))
    assert reasons["fallback"] > 0
    assert set(reasons) <= {"fallback", "exploration"}


def test_reason_is_fallback_for_every_decision_while_learning(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.register_path(GOAL, "gpt-4o-mini")
    assert {intel.decide(GOAL)["reason"] for _ in range(20)} == {"fallback"}


def test_reason_is_not_fallback_once_learned(
    intel: Intelligence, seed_outcomes: SeedOutcomes
) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.register_path(GOAL, "gpt-4o-mini")
    # min_samples_before_exploit defaults to 20: give both paths more than that.
    seed_outcomes(intel, GOAL, {"gpt-4o": 0.9, "gpt-4o-mini": 0.6}, n=25)
    reasons = Counter(intel.decide(GOAL)["reason"] for _ in range(200))
    assert "fallback" not in reasons
    assert set(reasons) <= {"optimal", "cost_optimized", "exploration"}
    assert reasons["optimal"] > 150


def test_min_samples_before_exploit_controls_the_learning_phase(
    intel: Intelligence, seed_outcomes: SeedOutcomes
) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.register_path(GOAL, "gpt-4o-mini")
    intel.set_exploration_config(GOAL, min_samples_before_exploit=5)
    seed_outcomes(intel, GOAL, {"gpt-4o": 1.0, "gpt-4o-mini": 0.4}, n=6)
    assert "fallback" not in {intel.decide(GOAL)["reason"] for _ in range(50)}


def test_a_single_path_is_optimal_once_learned(
    intel: Intelligence, seed_outcomes: SeedOutcomes
) -> None:
    intel.register_path(GOAL, "gpt-4o")
    seed_outcomes(intel, GOAL, {"gpt-4o": 0.8}, n=30)
    decision = intel.decide(GOAL)
    assert decision["reason"] == "optimal"
    assert decision["exploration"] is False
    assert decision["sample_count"] == 30
    assert decision["success_rate"] == pytest.approx(0.8, abs=0.02)


def test_confidence_grows_with_evidence(intel: Intelligence, seed_outcomes: SeedOutcomes) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.register_path(GOAL, "gpt-4o-mini")
    early = intel.decide(GOAL, candidate_model_ids=["gpt-4o"])["confidence"]
    seed_outcomes(intel, GOAL, {"gpt-4o": 0.95, "gpt-4o-mini": 0.3}, n=60)
    late = intel.decide(GOAL, candidate_model_ids=["gpt-4o"])["confidence"]
    assert early < 0.2
    assert late > 0.9


def test_decisions_are_recorded_with_a_propensity(
    intel: Intelligence, seed_outcomes: SeedOutcomes
) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.register_path(GOAL, "gpt-4o-mini")
    seed_outcomes(intel, GOAL, {"gpt-4o": 0.7, "gpt-4o-mini": 0.6}, n=10)
    decisions = [intel.decide(GOAL) for _ in range(50)]
    intel.flush()
    for decision in decisions:
        record = intel.store.get_decision("default", decision["trace_id"])
        assert record is not None
        assert record.goal == GOAL
        assert record.path_id == decision["path_id"]
        assert record.model_id == decision["model_id"]
        assert record.reason == decision["reason"]
        assert record.exploration == decision["exploration"]
        assert record.propensity is not None
        assert 0.0 < record.propensity <= 1.0
    # Two close paths: neither is chosen with certainty.
    assert any(
        record.propensity < 1.0
        for record in (intel.store.get_decision("default", d["trace_id"]) for d in decisions)
        if record is not None
    )


def test_a_single_path_has_propensity_one(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    trace_id = intel.decide(GOAL)["trace_id"]
    intel.flush()
    record = intel.store.get_decision("default", trace_id)
    assert record is not None
    assert record.propensity == 1.0


def test_buffered_decisions_are_written_on_close(tmp_db: str) -> None:
    with Intelligence(tmp_db, flush_interval_s=3600) as intel:
        intel.register_path(GOAL, "gpt-4o")
        trace_ids = [intel.decide(GOAL)["trace_id"] for _ in range(5)]
    with Intelligence(tmp_db) as reopened:
        for trace_id in trace_ids:
            assert reopened.store.get_decision("default", trace_id) is not None


def test_buffered_decisions_are_written_in_the_background(tmp_db: str) -> None:
    with Intelligence(tmp_db, flush_interval_s=0.05) as intel:
        intel.register_path(GOAL, "gpt-4o")
        trace_id = intel.decide(GOAL)["trace_id"]
        reader = Intelligence(tmp_db)
        try:
            deadline = time.monotonic() + 5
            while reader.store.get_decision("default", trace_id) is None:
                assert time.monotonic() < deadline, "decision never written"
                time.sleep(0.02)
        finally:
            reader.close()


def test_outcomes_of_a_decision_from_a_previous_process_are_attributed(tmp_db: str) -> None:
    with Intelligence(tmp_db) as first:
        first.register_path(GOAL, "gpt-4o")
        path_id = first.register_path(GOAL, "gpt-4o-mini")["path_id"]
        decision = first.decide(GOAL, candidate_model_ids=["gpt-4o-mini"])
    with Intelligence(tmp_db) as second:
        result = second.report_outcome(decision["trace_id"], GOAL, success=True)
        assert result["path_id"] == path_id


def test_high_risk_tasks_use_low_risk_paths(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o", risk_level="low")
    intel.register_path(GOAL, "gpt-4o-mini", risk_level="medium")
    intel.register_path(GOAL, "experimental-model", risk_level="high")
    high = Counter(intel.decide(GOAL, task_risk_level="high")["model_id"] for _ in range(100))
    medium = Counter(intel.decide(GOAL, task_risk_level="medium")["model_id"] for _ in range(200))
    low = Counter(intel.decide(GOAL, task_risk_level="low")["model_id"] for _ in range(300))
    assert set(high) == {"gpt-4o"}
    assert set(medium) == {"gpt-4o", "gpt-4o-mini"}
    assert set(low) == {"gpt-4o", "gpt-4o-mini", "experimental-model"}


def test_a_goal_with_only_high_risk_paths_still_gets_decisions(intel: Intelligence) -> None:
    intel.register_path(GOAL, "experimental-model", risk_level="high")
    assert intel.decide(GOAL, task_risk_level="high")["model_id"] == "experimental-model"


def test_decisions_are_reproducible_with_a_seed() -> None:
    def choices(seed: int) -> list[str]:
        with Intelligence(":memory:", seed=seed) as intel:
            for model in ("a", "b", "c"):
                intel.register_path(GOAL, model)
            return [intel.decide(GOAL)["model_id"] for _ in range(50)]

    assert choices(7) == choices(7)
    assert len(set(choices(7))) > 1


# -- decisions drawn ahead by the background writer ---------------------------------------------
def _ahead_of(intel: Intelligence, goal: str) -> object:
    return intel._scope(intel.tenant, goal, "").router._ahead


def test_the_writer_draws_the_next_decision_while_the_caller_waits() -> None:
    # What a routed call does: decide, wait on the provider, queue the outcome. The writer
    # stores the outcome, folds it and draws the next decision; the next decide takes it.
    intel = Intelligence(":memory:", seed=4, outcome_delay_s=0.005)
    try:
        for model in ("gpt-4o", "gpt-4o-mini"):
            intel.register_path(GOAL, model)
        models = ["gpt-4o", "gpt-4o-mini"]
        decision = intel.decide(GOAL, candidate_model_ids=models)
        intel.queue_outcome(decision["trace_id"], GOAL, success=True)
        deadline = time.monotonic() + 5
        while _ahead_of(intel, GOAL) is None and time.monotonic() < deadline:
            time.sleep(0.005)
        ahead = _ahead_of(intel, GOAL)
        assert ahead is not None, "the writer drew no decision ahead"
        assert intel.pending_outcomes() == 0  # drawn after the outcome was folded
        nxt = intel.decide(GOAL, candidate_model_ids=models)
        assert nxt["path_id"] == ahead.selection.path_id  # type: ignore[attr-defined]
        assert _ahead_of(intel, GOAL) is None
        assert intel.stats(GOAL)["decisions"] == 2
    finally:
        intel.close()


def test_a_path_disabled_after_a_decision_was_drawn_ahead_gets_no_traffic(
    intel: Intelligence,
) -> None:
    for model in ("gpt-4o", "claude-3-haiku"):
        intel.register_path(GOAL, model)
    for _ in range(20):
        intel.decide(GOAL)
        intel._draw_ahead()  # what the writer does while the caller waits
        ahead = _ahead_of(intel, GOAL)
        assert ahead is not None
        intel.disable_path(ahead.selection.path_id)  # type: ignore[attr-defined]
        decision = intel.decide(GOAL)
        assert decision["path_id"] != ahead.selection.path_id  # type: ignore[attr-defined]
        intel.enable_path(ahead.selection.path_id)  # type: ignore[attr-defined]

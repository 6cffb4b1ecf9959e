"""report_outcome and update_outcome: what is learned, what is stored, and late corrections."""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kalibr_core import Intelligence, NotFoundError, StoreError, ValidationError, _intelligence

SeedOutcomes = Callable[..., None]  # the seed_outcomes fixture (conftest.py)
GOAL = "resolve_ticket"
BatchSizes = Callable[[Intelligence], list[int]]  # the batch_sizes fixture (conftest.py)


def path_row(intel: Intelligence, model: str, **kwargs: Any) -> dict[str, Any]:
    return next(p for p in intel.stats(GOAL, **kwargs)["paths"] if p["model_id"] == model)


# -- reporting -----------------------------------------------------------------------------------
def test_report_outcome_is_accepted_and_attributed_to_the_decided_path(
    intel: Intelligence,
) -> None:
    intel.register_path(GOAL, "gpt-4o")
    decision = intel.decide(GOAL)
    result = intel.report_outcome(decision["trace_id"], GOAL, success=True)
    assert result == {
        "status": "accepted",
        "trace_id": decision["trace_id"],
        "goal": GOAL,
        "path_id": decision["path_id"],
    }
    assert path_row(intel, "gpt-4o")["total_outcomes"] == 1


def test_outcome_details_are_stored(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o", tool_id="crm", params={"temperature": 0.2})
    decision = intel.decide(GOAL)
    intel.report_outcome(
        decision["trace_id"],
        GOAL,
        success=False,
        failure_reason="Provider timed out after 30s",
        failure_category="timeout",
        metadata={"ticket": 48, "tags": ["billing"]},
        cost_usd=0.0123,
        latency_ms=30000,
        input_tokens=812,
        output_tokens=0,
    )
    [stored] = intel.store.outcomes_in_window("default", GOAL, 0)
    assert stored.trace_id == decision["trace_id"]
    assert stored.path_id == decision["path_id"]
    assert stored.success is False
    assert stored.score is None
    assert stored.value == 0.0
    assert stored.failure_reason == "Provider timed out after 30s"
    assert stored.failure_category == "timeout"
    assert stored.metadata == {"ticket": 48, "tags": ["billing"]}
    assert stored.cost_usd == 0.0123
    assert stored.latency_ms == 30000
    assert (stored.input_tokens, stored.output_tokens) == (812, 0)


@pytest.mark.parametrize(("score", "success"), [(0.85, True), (0.5, True), (0.49, False)])
def test_a_score_alone_decides_success_at_one_half(
    intel: Intelligence, score: float, success: bool
) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.report_outcome("t1", GOAL, score=score, model_id="gpt-4o")
    [stored] = intel.store.outcomes_in_window("default", GOAL, 0)
    assert stored.success is success
    assert stored.score == score


def test_a_score_counts_as_fractional_successes(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.report_outcome("t1", GOAL, score=0.85, model_id="gpt-4o")
    row = path_row(intel, "gpt-4o")
    assert row["lifetime_success_rate"] == pytest.approx(0.85)
    # Beta(1 + 0.85, 1 + 0.15): the posterior moved by 0.85 of a success.
    assert row["posterior_mean"] == pytest.approx(1.85 / 3, abs=1e-4)
    intel.report_outcome("t2", GOAL, success=True, score=0.4, model_id="gpt-4o")
    assert path_row(intel, "gpt-4o")["lifetime_success_rate"] == pytest.approx(0.625)


def test_scores_steer_routing_between_paths_that_both_succeed(intel: Intelligence) -> None:
    intel.register_path(GOAL, "good")
    intel.register_path(GOAL, "okay")
    for i in range(40):
        intel.report_outcome(f"g{i}", GOAL, success=True, score=0.85, model_id="good")
        intel.report_outcome(f"o{i}", GOAL, success=True, score=0.6, model_id="okay")
    assert intel.get_policy(GOAL)["recommended_model"] == "good"
    chosen = [intel.decide(GOAL)["model_id"] for _ in range(200)]
    assert chosen.count("good") > 150


def test_several_outcomes_per_trace_go_to_the_right_paths(intel: Intelligence) -> None:
    a = intel.register_path(GOAL, "model-a")["path_id"]
    b = intel.register_path(GOAL, "model-b")["path_id"]
    decision = intel.decide(GOAL, candidate_model_ids=["model-a"])
    trace_id = decision["trace_id"]
    first = intel.report_outcome(trace_id, GOAL, success=False, failure_category="timeout")
    second = intel.report_outcome(trace_id, GOAL, success=True, model_id="model-b")
    assert (first["path_id"], second["path_id"]) == (a, b)
    row_a, row_b = path_row(intel, "model-a"), path_row(intel, "model-b")
    assert (row_a["total_outcomes"], row_a["lifetime_success_rate"]) == (1, 0.0)
    assert (row_b["total_outcomes"], row_b["lifetime_success_rate"]) == (1, 1.0)
    assert intel.store.count_outcomes("default", GOAL) == 2


def test_unknown_trace_ids_are_attributed_by_model_tools_and_params(intel: Intelligence) -> None:
    plain = intel.register_path(GOAL, "gpt-4o")["path_id"]
    with_crm = intel.register_path(GOAL, "claude", tool_id="crm")["path_id"]
    with_web = intel.register_path(GOAL, "claude", tool_id=["web", "crm"])["path_id"]
    cold = intel.register_path(GOAL, "llama", params={"temperature": 0.2})["path_id"]
    hot = intel.register_path(GOAL, "llama", params={"temperature": 0.9})["path_id"]

    def attributed(**kwargs: Any) -> str | None:
        result = intel.report_outcome("client-minted-id", GOAL, success=True, **kwargs)
        return result["path_id"]

    assert attributed(model_id="gpt-4o") == plain
    assert attributed(model_id="claude", tool_id="crm") == with_crm
    assert attributed(model_id="claude", tool_id="web,crm") == with_web
    assert attributed(model_id="claude", tool_id=["crm", "web"]) == with_web
    assert attributed(model_id="llama", execution_params={"temperature": 0.2}) == cold
    assert attributed(model_id="llama", execution_params={"temperature": 0.9}) == hot


def test_unattributable_outcomes_are_stored_not_lost(intel: Intelligence) -> None:
    intel.register_path(GOAL, "claude", tool_id="crm")
    intel.register_path(GOAL, "claude", tool_id="web")
    cases: list[dict[str, Any]] = [
        {},  # no decision and no model
        {"model_id": "mystery-model"},  # not registered
        {"model_id": "claude"},  # ambiguous: two paths use this model
        {"model_id": "claude", "tool_id": "calculator"},
    ]
    for i, kwargs in enumerate(cases):
        result = intel.report_outcome(f"orphan-{i}", GOAL, success=False, **kwargs)
        assert result["status"] == "accepted"
        assert result["path_id"] is None
    stored = intel.store.outcomes_in_window("default", GOAL, 0)
    assert [o.trace_id for o in stored] == [f"orphan-{i}" for i in range(4)]
    assert all(o.path_id is None for o in stored)
    # They steer nothing, but diagnostics count them.
    assert intel.stats(GOAL)["total_outcomes"] == 0
    assert intel.get_insights(GOAL)["goals"][0]["sample_count"] == 4


def test_outcomes_for_an_unregistered_goal_are_kept(intel: Intelligence) -> None:
    intel.report_outcome("t1", "never_registered", success=True, model_id="gpt-4o")
    assert intel.store.count_outcomes("default", "never_registered") == 1
    goals = [g["goal"] for g in intel.get_insights()["goals"]]
    assert goals == ["never_registered"]


def test_no_prompt_or_completion_content_is_stored(tmp_db: str) -> None:
    with Intelligence(tmp_db) as intel:
        intel.register_path(GOAL, "gpt-4o", tool_id="crm", params={"temperature": 0.1})
        decision = intel.decide(GOAL)
        intel.report_outcome(decision["trace_id"], GOAL, success=True, input_tokens=10)
        with pytest.raises(TypeError):
            intel.report_outcome(  # type: ignore[call-arg]
                decision["trace_id"], GOAL, success=True, prompt="Book a meeting with Ann"
            )
    connection = sqlite3.connect(tmp_db)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master")]
        columns = {
            column[1].lower()
            for table in tables
            if not table.startswith("sqlite_")
            for column in connection.execute(f"PRAGMA table_info({table!r})")
        }
    finally:
        connection.close()
    assert "outcomes" in tables
    forbidden = ("prompt", "completion", "content", "message", "response", "text", "body")
    assert [c for c in columns if any(word in c for word in forbidden)] == []
    assert not {"input", "output", "messages"} & columns


def test_a_queued_outcome_is_validated_at_once_and_stored_by_flush(tmp_db: str) -> None:
    with Intelligence(tmp_db, flush_interval_s=3600) as intel:
        path_id = intel.register_path(GOAL, "gpt-4o")["path_id"]
        with pytest.raises(ValidationError):
            intel.report_outcome("t0", GOAL, success=True, cost_usd=-1, wait=False)
        result = intel.report_outcome("t1", GOAL, success=True, model_id="gpt-4o", wait=False)
        assert result["path_id"] == path_id
        intel.flush()
        assert intel.pending_outcomes() == 0
        assert intel.store.count_outcomes("default", GOAL) == 1
        assert path_row(intel, "gpt-4o")["total_outcomes"] == 1
        intel.report_outcome("t2", GOAL, success=False, model_id="gpt-4o", wait=False)
    with Intelligence(tmp_db) as reopened:  # close() stored what was still queued
        assert [o.trace_id for o in reopened.store.outcomes_in_window("default", GOAL, 0)] == [
            "t1",
            "t2",
        ]


def test_a_queued_outcome_can_be_updated_at_once(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.report_outcome("t1", GOAL, success=True, model_id="gpt-4o", wait=False)
    assert intel.update_outcome("t1", GOAL, success=False)["fields_updated"] == ["success"]
    intel.flush()
    row = path_row(intel, "gpt-4o")
    assert (row["total_outcomes"], row["lifetime_success_rate"]) == (1, 0.0)


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_queued_outcomes_are_stored_in_one_commit_after_the_delay(
    tmp_db: str, batch_sizes: BatchSizes
) -> None:
    with Intelligence(tmp_db, flush_interval_s=3600, outcome_delay_s=1.0) as intel:
        intel.register_path(GOAL, "gpt-4o")
        batches = batch_sizes(intel)
        for i in range(20):
            intel.report_outcome(f"t{i}", GOAL, success=True, model_id="gpt-4o", wait=False)
        assert intel.pending_outcomes() == 20  # the writer waits for the batch to collect
        wait_until(lambda: intel.store.count_outcomes("default", GOAL) == 20)  # no flush()
        assert batches == [20]
        assert path_row(intel, "gpt-4o")["total_outcomes"] == 20


def test_a_sleeping_writer_is_woken_by_the_next_outcome(
    tmp_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_intelligence, "_WRITER_LINGER_S", 0.0)  # sleeps once the queue is empty
    with Intelligence(tmp_db, flush_interval_s=3600, outcome_delay_s=0.01) as intel:
        intel.register_path(GOAL, "gpt-4o")
        for i in range(1, 4):
            intel.report_outcome(f"t{i}", GOAL, success=True, model_id="gpt-4o", wait=False)
            wait_until(lambda: intel.store.count_outcomes("default", GOAL) == i)  # noqa: B023
            wait_until(lambda: intel._writer_asleep)  # the next outcome must wake it


def test_a_busy_writer_is_not_woken_for_each_outcome(
    tmp_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Intelligence(tmp_db, flush_interval_s=3600, outcome_delay_s=0.01) as intel:
        intel.register_path(GOAL, "gpt-4o")
        wakes: list[None] = []
        wake = intel._wake.set

        def counted_wake() -> None:
            wakes.append(None)
            wake()

        monkeypatch.setattr(intel._wake, "set", counted_wake)
        for i in range(1, 6):  # calls tens of milliseconds apart, each outcome its own batch
            intel.report_outcome(f"t{i}", GOAL, success=True, model_id="gpt-4o", wait=False)
            wait_until(lambda: intel.store.count_outcomes("default", GOAL) == i)  # noqa: B023
            time.sleep(0.03)
        assert wakes == []  # it kept collecting on its own timer


def test_close_stores_queued_outcomes_without_waiting_for_the_delay(tmp_db: str) -> None:
    intel = Intelligence(tmp_db, outcome_delay_s=3600)
    intel.register_path(GOAL, "gpt-4o")
    intel.report_outcome("t1", GOAL, success=True, model_id="gpt-4o", wait=False)
    started = time.monotonic()
    intel.close()
    assert time.monotonic() - started < 4  # the writer left at once (it is joined for 5 s)
    with Intelligence(tmp_db) as reopened:
        assert reopened.store.count_outcomes("default", GOAL) == 1


def test_queued_outcomes_are_stored_exactly_once_while_flushes_race(tmp_db: str) -> None:
    threads, per_thread = 4, 150
    with Intelligence(tmp_db, outcome_delay_s=0.001, flush_interval_s=0.01) as intel:
        intel.register_path(GOAL, "gpt-4o")
        done = threading.Event()

        def report(k: int) -> None:
            for i in range(per_thread):
                intel.report_outcome(
                    f"t{k}-{i}", GOAL, success=i % 2 == 0, model_id="gpt-4o", wait=False
                )

        def flush() -> None:
            while not done.is_set():
                intel.flush()

        flusher = threading.Thread(target=flush)
        flusher.start()
        workers = [threading.Thread(target=report, args=(k,)) for k in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        done.set()
        flusher.join()
    with Intelligence(tmp_db) as reopened:
        stored = reopened.store.outcomes_in_window("default", GOAL, 0)
        assert sorted(o.trace_id for o in stored) == sorted(
            f"t{k}-{i}" for k in range(threads) for i in range(per_thread)
        )
        row = path_row(reopened, "gpt-4o")
        assert row["total_outcomes"] == threads * per_thread
        assert row["lifetime_success_rate"] == 0.5


def test_a_replayed_outcome_id_counts_once(tmp_db: str) -> None:
    with Intelligence(tmp_db) as first, Intelligence(tmp_db) as second:
        first.register_path(GOAL, "gpt-4o")
        assert path_row(second, "gpt-4o")["total_outcomes"] == 0
        for target in (first, first, second):  # a client replaying after an outage
            result = target.report_outcome(
                "t1", GOAL, success=True, model_id="gpt-4o", outcome_id="client-42"
            )
            assert result["status"] == "accepted"
        for _ in range(2):
            first.report_outcome(
                "t2", GOAL, success=False, model_id="gpt-4o", outcome_id="o2", wait=False
            )
        first.flush()
        first.report_outcome("t3", GOAL, success=True, model_id="gpt-4o")  # no key: counted
        assert first.store.count_outcomes("default", GOAL) == 3
        for target in (first, second):
            target.decide(GOAL)
            row = path_row(target, "gpt-4o")
            assert row["total_outcomes"] == 3
            assert row["lifetime_success_rate"] == pytest.approx(2 / 3, abs=1e-4)


def test_a_bad_outcome_id_is_rejected(intel: Intelligence) -> None:
    with pytest.raises(ValidationError, match="outcome_id"):
        intel.report_outcome("t", GOAL, success=True, model_id="m", outcome_id="a b")
    assert intel.store.count_outcomes("default") == 0


# -- update_outcome ------------------------------------------------------------------------------
def test_update_changes_only_the_fields_passed(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    decision = intel.decide(GOAL)
    intel.report_outcome(
        decision["trace_id"],
        GOAL,
        success=True,
        score=0.9,
        failure_reason="none",
        metadata={"ticket": 48},
        cost_usd=0.01,
    )
    result = intel.update_outcome(
        decision["trace_id"], GOAL, success=False, failure_category="user_unsatisfied"
    )
    assert result == {
        "status": "updated",
        "trace_id": decision["trace_id"],
        "goal": GOAL,
        "fields_updated": ["success", "failure_category"],
    }
    [stored] = intel.store.outcomes_in_window("default", GOAL, 0)
    assert stored.success is False
    assert stored.failure_category == "user_unsatisfied"
    assert stored.score == 0.9
    assert stored.failure_reason == "none"
    assert stored.metadata == {"ticket": 48}
    assert stored.cost_usd == 0.01
    assert stored.updated_at is not None


def test_update_with_identical_values_reports_no_changes(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.report_outcome("t1", GOAL, success=True, model_id="gpt-4o", metadata={"a": 1})
    result = intel.update_outcome("t1", GOAL, success=True, metadata={"a": 1})
    assert result["status"] == "no_changes"
    assert result["fields_updated"] == []
    assert intel.update_outcome("t1", GOAL)["status"] == "no_changes"
    [stored] = intel.store.outcomes_in_window("default", GOAL, 0)
    assert stored.updated_at is None


def test_update_merges_metadata(intel: Intelligence) -> None:
    intel.report_outcome("t1", GOAL, success=True, metadata={"ticket": 48, "agent": "a1"})
    result = intel.update_outcome("t1", GOAL, metadata={"agent": "a2", "reopened": True})
    assert result["fields_updated"] == ["metadata"]
    [stored] = intel.store.outcomes_in_window("default", GOAL, 0)
    assert stored.metadata == {"ticket": 48, "agent": "a2", "reopened": True}


def test_update_of_an_unknown_trace_or_goal_raises_not_found(intel: Intelligence) -> None:
    intel.report_outcome("t1", GOAL, success=True)
    with pytest.raises(NotFoundError, match="nope") as excinfo:
        intel.update_outcome("nope", GOAL, success=False)
    assert excinfo.value.trace_id == "nope"
    assert excinfo.value.goal == GOAL
    with pytest.raises(NotFoundError):
        intel.update_outcome("t1", "other_goal", success=False)
    [stored] = intel.store.outcomes_in_window("default", GOAL, 0)
    assert stored.success is True


def test_update_corrects_what_routing_learned(intel: Intelligence) -> None:
    intel.register_path(GOAL, "model-a")
    intel.register_path(GOAL, "model-b")
    for i in range(30):
        intel.report_outcome(f"a{i}", GOAL, success=True, model_id="model-a")
        intel.report_outcome(f"b{i}", GOAL, success=i % 3 != 0, model_id="model-b")
    assert intel.get_policy(GOAL)["recommended_model"] == "model-a"
    # 48 hours later: most of model-a's "resolved" tickets were reopened.
    for i in range(25):
        intel.update_outcome(f"a{i}", GOAL, success=False, failure_category="user_unsatisfied")
    row = path_row(intel, "model-a")
    assert row["lifetime_success_rate"] == pytest.approx(5 / 30, abs=1e-4)
    assert row["total_outcomes"] == 30
    assert intel.get_policy(GOAL)["recommended_model"] == "model-b"
    chosen = [intel.decide(GOAL)["model_id"] for _ in range(100)]
    assert chosen.count("model-b") > 80


def test_update_score_changes_the_learned_value(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.report_outcome("t1", GOAL, success=True, model_id="gpt-4o")
    intel.update_outcome("t1", GOAL, score=0.25)
    assert path_row(intel, "gpt-4o")["lifetime_success_rate"] == pytest.approx(0.25)


def test_update_targets_the_latest_outcome_of_the_trace(intel: Intelligence) -> None:
    intel.register_path(GOAL, "model-a")
    intel.register_path(GOAL, "model-b")
    intel.report_outcome("t1", GOAL, success=False, model_id="model-a")
    intel.report_outcome("t1", GOAL, success=True, model_id="model-b")
    intel.update_outcome("t1", GOAL, success=False)
    first, second = intel.store.outcomes_in_window("default", GOAL, 0)
    assert (first.success, second.success) == (False, False)
    assert path_row(intel, "model-a")["lifetime_success_rate"] == 0.0
    assert path_row(intel, "model-b")["lifetime_success_rate"] == 0.0


def test_update_of_an_unattributed_outcome(intel: Intelligence) -> None:
    intel.report_outcome("t1", GOAL, success=True)
    assert intel.update_outcome("t1", GOAL, success=False)["status"] == "updated"
    [stored] = intel.store.outcomes_in_window("default", GOAL, 0)
    assert stored.success is False


def test_a_correction_survives_a_restart(tmp_db: str) -> None:
    with Intelligence(tmp_db) as intel:
        intel.register_path(GOAL, "gpt-4o")
        for i in range(10):
            intel.report_outcome(f"t{i}", GOAL, success=True, model_id="gpt-4o")
        intel.update_outcome("t0", GOAL, success=False)
        intel.update_outcome("t1", GOAL, score=0.5)
    with Intelligence(tmp_db) as reopened:
        row = path_row(reopened, "gpt-4o")
        assert row["total_outcomes"] == 10
        assert row["lifetime_success_rate"] == pytest.approx(0.85)
        assert row["success_rate"] == pytest.approx(0.85)


def test_a_correction_made_elsewhere_is_applied_once(tmp_db: str) -> None:
    """Another process's correction of an outcome this one has not read yet counts once."""
    with Intelligence(tmp_db) as writer, Intelligence(tmp_db) as reader:
        writer.register_path(GOAL, "gpt-4o")
        assert path_row(reader, "gpt-4o")["total_outcomes"] == 0  # reader's state is loaded
        for i in range(5):
            writer.report_outcome(f"t{i}", GOAL, success=True, model_id="gpt-4o")
        writer.update_outcome("t0", GOAL, success=False)
        for instance in (writer, reader):
            row = path_row(instance, "gpt-4o")
            assert row["total_outcomes"] == 5
            assert row["lifetime_success_rate"] == pytest.approx(0.8)
            assert row["success_rate"] == pytest.approx(0.8)
        # And a later correction of an outcome the reader has already folded.
        writer.update_outcome("t1", GOAL, success=False)
        assert path_row(reader, "gpt-4o")["lifetime_success_rate"] == pytest.approx(0.6)


def test_a_correction_made_here_of_an_outcome_reported_elsewhere(tmp_db: str) -> None:
    with Intelligence(tmp_db) as writer, Intelligence(tmp_db) as corrector:
        writer.register_path(GOAL, "gpt-4o")
        assert path_row(corrector, "gpt-4o")["total_outcomes"] == 0
        for i in range(4):
            writer.report_outcome(f"t{i}", GOAL, success=True, model_id="gpt-4o")
        corrector.update_outcome("t3", GOAL, success=False)
        for instance in (writer, corrector):
            assert path_row(instance, "gpt-4o")["lifetime_success_rate"] == pytest.approx(0.75)


# -- the correction property ---------------------------------------------------------------------
MODELS = ("model-a", "model-b", "model-c")
scores = st.one_of(st.none(), st.floats(0, 1, allow_nan=False))
reports = st.tuples(st.sampled_from(MODELS), st.one_of(st.none(), st.booleans()), scores).filter(
    lambda r: r[1] is not None or r[2] is not None
)
corrections = st.tuples(st.integers(0, 10**6), st.one_of(st.none(), st.booleans()), scores)


def _comparable(intel: Intelligence) -> dict[str, Any]:
    stats = intel.stats(GOAL)
    return {
        "total": stats["total_outcomes"],
        "success_rate": stats["success_rate"],
        "paths": {
            p["model_id"]: (
                p["total_outcomes"],
                p["sample_count"],
                p["lifetime_success_rate"],
                p["success_rate"],
                p["posterior_mean"],
            )
            for p in stats["paths"]
        },
    }


def _totals(intel: Intelligence) -> dict[str, tuple[float, ...]]:
    totals, _, _ = intel.store.load_scope("default", GOAL, "", 320)
    return {
        t.path_id: (t.count, t.successes, t.failures, t.eff_count, t.eff_successes, t.eff_failures)
        for t in totals
    }


def _assert_same(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual["total"] == expected["total"]
    assert actual["success_rate"] == pytest.approx(expected["success_rate"], abs=2e-4)
    assert actual["paths"].keys() == expected["paths"].keys()
    for model, row in expected["paths"].items():
        assert actual["paths"][model][:2] == row[:2], model
        assert actual["paths"][model][2:] == pytest.approx(row[2:], abs=2e-4), model


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(
    outcomes=st.lists(reports, min_size=1, max_size=20),
    fixes=st.lists(corrections, max_size=12),
)
def test_correcting_equals_reporting_the_corrected_outcomes(
    outcomes: list[tuple[str, bool | None, float | None]],
    fixes: list[tuple[int, bool | None, float | None]],
) -> None:
    corrected = Intelligence(":memory:", seed=1)
    observer = Intelligence(corrected.store, seed=2)  # another process on the same database
    direct = Intelligence(":memory:", seed=3)
    try:
        for target in (corrected, direct):
            for model in MODELS:
                target.register_path(GOAL, model)
        corrected.stats(GOAL)
        observer.stats(GOAL)  # both have their routing state loaded before anything happens

        final: list[list[Any]] = []
        for i, (model, success, score) in enumerate(outcomes):
            corrected.report_outcome(f"t{i}", GOAL, success=success, score=score, model_id=model)
            final.append([model, success if success is not None else score >= 0.5, score])  # type: ignore[operator]
        for index, success, score in fixes:
            i = index % len(outcomes)
            corrected.update_outcome(f"t{i}", GOAL, success=success, score=score)
            if success is not None:
                final[i][1] = success
            if score is not None:
                final[i][2] = score
        for i, (model, success, score) in enumerate(final):
            direct.report_outcome(f"t{i}", GOAL, success=success, score=score, model_id=model)

        expected = _comparable(direct)
        _assert_same(_comparable(corrected), expected)
        _assert_same(_comparable(observer), expected)
        with Intelligence(corrected.store) as restarted:  # state rebuilt from the store
            _assert_same(_comparable(restarted), expected)
        direct_totals = {k: v for k, v in _totals(direct).items()}
        assert _totals(corrected).keys() == direct_totals.keys()
        for path_id, row in _totals(corrected).items():
            assert row == pytest.approx(direct_totals[path_id], abs=1e-9)
        stored = {o.trace_id: o for o in corrected.store.outcomes_in_window("default", GOAL, 0)}
        for i, (_model, success, score) in enumerate(final):
            assert stored[f"t{i}"].success is success
            assert stored[f"t{i}"].score == score
            assert math.isclose(stored[f"t{i}"].value, score if score is not None else success)
    finally:
        observer.close()
        corrected.close()
        direct.close()


# -- pipelines -----------------------------------------------------------------------------------
def test_pipelines_learn_separately(intel: Intelligence, seed_outcomes: SeedOutcomes) -> None:
    intel.register_path(GOAL, "model-a")
    intel.register_path(GOAL, "model-b")
    seed_outcomes(intel, GOAL, {"model-a": 0.9, "model-b": 0.5}, n=40)
    seed_outcomes(
        intel, GOAL, {"model-a": 0.1, "model-b": 0.9}, n=40, pipeline_id="pipeline-a", prefix="pa"
    )
    default = [intel.decide(GOAL)["model_id"] for _ in range(100)]
    in_a = [intel.decide(GOAL, pipeline_id="pipeline-a")["model_id"] for _ in range(100)]
    in_b = intel.decide(GOAL, pipeline_id="pipeline-b")
    assert default.count("model-a") > 80
    assert in_a.count("model-b") > 80
    assert in_b["reason"] in {"fallback", "exploration"}
    assert in_b["pipeline_id"] == "pipeline-b"
    assert in_b["sample_count"] == 0
    assert intel.stats(GOAL)["total_outcomes"] == 80
    assert intel.stats(GOAL, pipeline_id="pipeline-a")["total_outcomes"] == 80
    assert intel.stats(GOAL, pipeline_id="pipeline-b")["total_outcomes"] == 0
    assert intel.get_policy(GOAL)["recommended_model"] == "model-a"
    assert intel.get_policy(GOAL, pipeline_id="pipeline-a")["recommended_model"] == "model-b"
    with pytest.raises(NotFoundError):
        intel.get_policy(GOAL, pipeline_id="pipeline-b")


def test_an_outcome_follows_its_decisions_pipeline(intel: Intelligence) -> None:
    intel.register_path(GOAL, "model-a")
    decision = intel.decide(GOAL, pipeline_id="pipeline-a")
    assert decision["pipeline_id"] == "pipeline-a"
    intel.report_outcome(decision["trace_id"], GOAL, success=True)
    assert intel.stats(GOAL, pipeline_id="pipeline-a")["total_outcomes"] == 1
    assert intel.stats(GOAL)["total_outcomes"] == 0
    intel.update_outcome(decision["trace_id"], GOAL, success=False)
    assert intel.stats(GOAL, pipeline_id="pipeline-a")["success_rate"] == 0.0
    assert intel.stats(GOAL)["total_outcomes"] == 0


# -- queue_outcome (checked by the writer) ------------------------------------------------------
def test_a_queued_unchecked_outcome_is_attributed_and_stored_by_the_writer(tmp_db: str) -> None:
    with Intelligence(tmp_db, flush_interval_s=3600) as intel:
        path_id = intel.register_path(GOAL, "gpt-4o")["path_id"]
        decision = intel.decide(GOAL)
        before = time.time()
        assert intel.queue_outcome(decision["trace_id"], GOAL, success=True, cost_usd=0.01) is None
        assert intel.pending_outcomes() == 1
        wait_until(lambda: intel.pending_outcomes() == 0)  # no flush(): the writer stored it
        [stored] = intel.store.outcomes_in_window("default", GOAL, 0)
        assert (stored.trace_id, stored.path_id, stored.cost_usd) == (
            decision["trace_id"],
            path_id,
            0.01,
        )
        assert before <= stored.created_at <= time.time()  # when it was queued
        assert path_row(intel, "gpt-4o")["total_outcomes"] == 1


def test_an_invalid_queued_outcome_is_logged_and_the_others_are_stored(
    intel: Intelligence, caplog: pytest.LogCaptureFixture
) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.queue_outcome("t1", GOAL, success=True, model_id="gpt-4o")
    intel.queue_outcome("t2", GOAL, success=True, failure_category="bogus")
    intel.queue_outcome("t3", GOAL, success=False, model_id="gpt-4o")
    with caplog.at_level(logging.ERROR, logger="kalibr_core"):
        intel.flush()
    assert "queue_outcome() is invalid" in caplog.text
    assert "bogus" in caplog.text  # the reason is in the log
    stored = intel.store.outcomes_in_window("default", GOAL, 0)
    assert [o.trace_id for o in stored] == ["t1", "t3"]


def test_queued_outcomes_survive_a_store_that_fails_while_attributing_them(
    intel: Intelligence, monkeypatch: pytest.MonkeyPatch
) -> None:
    intel.register_path(GOAL, "gpt-4o")
    for i in range(3):  # never issued here: attributed through the store
        intel.queue_outcome(f"t{i}", GOAL, success=True, model_id="gpt-4o")
    with monkeypatch.context() as patch:
        patch.setattr(intel.store, "get_decision", _raise_store_error)
        with pytest.raises(StoreError):
            intel.flush()
        assert intel.pending_outcomes() == 3  # kept, in order
    intel.flush()
    stored = intel.store.outcomes_in_window("default", GOAL, 0)
    assert [o.trace_id for o in stored] == ["t0", "t1", "t2"]


def _raise_store_error(*args: Any, **kwargs: Any) -> Any:
    raise StoreError("the database is unreachable")


def test_a_gap_in_the_log_folds_a_path_registered_elsewhere(tmp_db: str) -> None:
    # A's own outcome arrives after B's (a gap in A's log): A folds the log from its cursor
    # without waiting for its next full sync, and learns of B's new path on the way instead
    # of skipping the outcome reported on it.
    with Intelligence(tmp_db, sync_interval_s=3600) as a, Intelligence(tmp_db) as b:
        a.register_path(GOAL, "gpt-4o")
        a.decide(GOAL)  # A's scope is loaded: it knows gpt-4o only
        new_path = b.register_path(GOAL, "claude-3-5-haiku")["path_id"]
        b.report_outcome("b1", GOAL, success=True, model_id="claude-3-5-haiku")
        a.report_outcome("a1", GOAL, success=True, model_id="gpt-4o")
        a.decide(GOAL)  # folds A's queued outcome: a gap, so the log is read
        router = a._scopes[("default", GOAL, "")].router
        assert router.paths[new_path].count == 1
        assert sum(p.count for p in router.paths.values()) == 2

"""Decisions when the service is slow, down or failing: fast, never an error, and as good as
the last snapshot of the goal's posteriors allows."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kalibr_core import IntelligenceUnavailableError, NoPathAvailableError, ValidationError
from kalibr_core._domain import normalise_path

FakeService = Any  # conftest.FakeService
MakeRemote = Callable[..., Any]
WaitFor = Callable[..., bool]
GOAL = "extract_company"
FIRST, SECOND = "gpt-4o-mini", "claude-sonnet-4"


def stats_row(model: str, rate: float, n: int, **extra: Any) -> dict[str, Any]:
    spec = normalise_path(GOAL, model)
    return {
        "path_id": spec.path_id,
        "model_id": model,
        "tool_id": None,
        "params": {},
        "enabled": True,
        "risk_level": "low",
        "success_rate": rate,
        "sample_count": n,
        "demoted": False,
        "avg_cost_usd": None,
        "avg_latency_ms": None,
        **extra,
    }


def snapshot(fake: FakeService, rates: dict[str, tuple[float, int]]) -> None:
    fake.stats[GOAL] = {
        "goal": GOAL,
        "config": {"exploration_rate": None, "min_samples_before_exploit": 20},
        "paths": [stats_row(model, rate, n) for model, (rate, n) in rates.items()],
    }


def test_decisions_come_from_the_service_while_it_answers(
    fake: FakeService, make_remote: MakeRemote
) -> None:
    remote = make_remote()
    remote.register_path(GOAL, FIRST)
    remote.register_path(GOAL, SECOND)

    decision = remote.decide(GOAL, candidate_model_ids=[FIRST, SECOND])

    assert decision["model_id"] == SECOND and decision["source"] == "service"
    assert fake.headers is not None
    assert fake.headers["x-api-key"] == "kc_test_key" and fake.headers["x-tenant-id"] == "acme"
    _, _, body = next(entry for entry in fake.log if entry[1] == "routing/decide")
    assert body == {
        "goal": GOAL,
        "task_risk_level": "low",
        "candidate_model_ids": [FIRST, SECOND],
    }


def test_service_down_fails_open_to_the_first_path_at_once(
    fake: FakeService, make_remote: MakeRemote, caplog: pytest.LogCaptureFixture
) -> None:
    remote = make_remote()
    remote.register_path(GOAL, FIRST)
    remote.register_path(GOAL, SECOND)
    fake.down = True

    with caplog.at_level(logging.WARNING, logger="kalibr_core.remote"):
        started = time.perf_counter()
        decisions = [remote.decide(GOAL) for _ in range(20)]
        elapsed = time.perf_counter() - started

    assert {d["model_id"] for d in decisions} == {FIRST}
    for decision in decisions:
        assert re.fullmatch(r"[0-9a-f]{32}", decision["trace_id"])
        assert decision["reason"] == "fallback"
        assert decision["source"] == "fail_open" and decision["fallback"] == "first_path"
        assert decision["path_id"] == normalise_path(GOAL, FIRST).path_id
    assert len({d["trace_id"] for d in decisions}) == 20
    assert elapsed < 1.0
    # One warning when the service went down, not one per decision.
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1


def test_a_slow_service_costs_a_decision_its_budget_and_no_more(
    fake: FakeService, make_remote: MakeRemote
) -> None:
    remote = make_remote()
    remote.register_path(GOAL, FIRST)
    remote.register_path(GOAL, SECOND)
    fake.delay_s["routing/decide"] = 2.0

    started = time.perf_counter()
    first = remote.decide(GOAL)
    slow = time.perf_counter() - started
    started = time.perf_counter()
    second = remote.decide(GOAL)
    fast = time.perf_counter() - started

    assert first["source"] == "fail_open" and first["model_id"] == FIRST
    assert 0.2 <= slow < 1.0  # the 250 ms budget (and scheduling), not the service's 2 s
    # Backing off: the next decision does not wait for the service again.
    assert second["source"] == "fail_open" and fast < 0.1
    assert fake.count("routing/decide") == 1


@pytest.mark.parametrize("status", [500, 503, 401, 429])
def test_error_answers_fail_open(
    status: int, fake: FakeService, make_remote: MakeRemote, caplog: pytest.LogCaptureFixture
) -> None:
    remote = make_remote()
    remote.register_path(GOAL, FIRST)
    fake.fail_with["routing/decide"] = status

    with caplog.at_level(logging.WARNING, logger="kalibr_core.remote"):
        decision = remote.decide(GOAL)

    assert decision["source"] == "fail_open" and decision["model_id"] == FIRST
    levels = {r.levelno for r in caplog.records if "unavailable" in r.getMessage()}
    assert levels == {logging.ERROR if status == 401 else logging.WARNING}


def test_the_service_comes_back_after_the_back_off(
    fake: FakeService, make_remote: MakeRemote, wait_for: WaitFor
) -> None:
    remote = make_remote()
    remote.register_path(GOAL, FIRST)
    remote.register_path(GOAL, SECOND)
    fake.down = True
    assert remote.decide(GOAL)["source"] == "fail_open"
    fake.down = False

    assert wait_for(lambda: remote.decide(GOAL)["source"] == "service", timeout=2)


def test_fail_open_samples_the_last_snapshot_of_the_posteriors(
    fake: FakeService, make_remote: MakeRemote, wait_for: WaitFor
) -> None:
    remote = make_remote()
    remote.register_path(GOAL, FIRST)
    remote.register_path(GOAL, SECOND)
    snapshot(fake, {FIRST: (0.3, 200), SECOND: (0.9, 200)})
    remote.decide(GOAL)  # a successful decision fetches the snapshot in the background
    assert wait_for(lambda: fake.count("routing/stats") == 1)
    time.sleep(0.05)
    fake.down = True

    decisions = [remote.decide(GOAL) for _ in range(50)]

    assert {d["fallback"] for d in decisions} == {"snapshot"}
    chosen = Counter(d["model_id"] for d in decisions)
    assert chosen[SECOND] >= 48, chosen  # not the first path: the one that works
    assert decisions[0]["snapshot_age_s"] is not None


def test_a_new_process_fails_open_from_the_saved_snapshot(
    fake: FakeService, make_remote: MakeRemote, tmp_path: Path
) -> None:
    earlier = make_remote(outbox=tmp_path / "shared.sqlite3")
    earlier.register_path(GOAL, FIRST)
    earlier.register_path(GOAL, SECOND)
    snapshot(fake, {FIRST: (0.2, 100), SECOND: (0.95, 100)})
    earlier.stats(GOAL)  # stats() refreshes the snapshot too
    earlier.close()
    fake.down = True

    later = make_remote(outbox=tmp_path / "shared.sqlite3")
    decisions = [later.decide(GOAL) for _ in range(30)]

    assert {d["fallback"] for d in decisions} == {"snapshot"}
    assert Counter(d["model_id"] for d in decisions)[SECOND] >= 28


def test_outcomes_reported_during_an_outage_steer_the_fail_open_decisions(
    fake: FakeService, make_remote: MakeRemote
) -> None:
    remote = make_remote()
    remote.register_path(GOAL, FIRST)
    remote.register_path(GOAL, SECOND)
    snapshot(fake, {FIRST: (0.92, 50), SECOND: (0.85, 50)})
    remote.stats(GOAL)
    fake.down = True

    # The preferred path breaks during the outage; its failures are folded in locally.
    late: Counter[str] = Counter()
    for i in range(200):
        decision = remote.decide(GOAL)
        if i >= 150:
            late[decision["model_id"]] += 1
        success = decision["model_id"] == SECOND
        remote.report_outcome(decision["trace_id"], GOAL, success=success, wait=False)

    assert late[SECOND] >= 45, late


def test_no_known_path_and_no_service_raises_unavailable(
    make_remote: MakeRemote, fake: Any
) -> None:
    remote = make_remote()
    fake.down = True

    with pytest.raises(IntelligenceUnavailableError, match="knows no path"):
        remote.decide("never_registered")


def test_service_without_paths_and_client_without_paths_raises_no_path(
    make_remote: MakeRemote,
) -> None:
    remote = make_remote()

    with pytest.raises(NoPathAvailableError):
        remote.decide("never_registered")


def test_bad_arguments_raise_before_anything_is_sent(
    fake: FakeService, make_remote: MakeRemote
) -> None:
    remote = make_remote()
    with pytest.raises(ValidationError, match="task_risk_level"):
        remote.decide(GOAL, task_risk_level="extreme")
    with pytest.raises(ValidationError, match="goal"):
        remote.decide("not a goal!")
    with pytest.raises(ValidationError, match="exploration_rate"):
        remote.decide(GOAL, exploration_rate=2.0)
    with pytest.raises(ValidationError, match="tenant"):
        remote.decide(GOAL, tenant="someone_else")
    assert fake.log == []


def test_an_unexpected_client_failure_fails_open_and_is_logged(
    fake: FakeService, make_remote: MakeRemote, caplog: pytest.LogCaptureFixture
) -> None:
    remote = make_remote()
    remote.register_path(GOAL, FIRST)

    def broken(request: Any) -> None:
        raise RuntimeError("a bug below the client")

    fake.on_request = broken
    with caplog.at_level(logging.ERROR, logger="kalibr_core.remote"):
        decision = remote.decide(GOAL)

    assert decision["source"] == "fail_open"
    assert any("failed unexpectedly" in r.getMessage() for r in caplog.records)

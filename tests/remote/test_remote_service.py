"""RemoteIntelligence against the real service (``kalibr-core serve`` in a subprocess): every
method speaks its wire format, and replays are stored once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kalibr_core import (
    ConfigurationError,
    NoPathAvailableError,
    NotFoundError,
    ValidationError,
)
from kalibr_core._outbox import Outbox, default_outbox_path
from kalibr_core._remote import RemoteBudget, RemoteIntelligence
from kalibr_core.store import SqliteStore

TENANT = "acme"
GOAL = "classify_ticket"


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, service_process: type[Any]
) -> Iterator[tuple[Any, str]]:
    """One service for the module, with a key made by ``kalibr-core keys create``."""
    server = service_process(tmp_path_factory.mktemp("service") / "service.db")
    key = server.create_key(TENANT)
    server.start()
    try:
        yield server, key
    finally:
        server.stop()


@pytest.fixture
def remote(
    running: tuple[Any, str], tmp_path: Path, fast_budget: RemoteBudget
) -> Iterator[RemoteIntelligence]:
    server, key = running
    client = RemoteIntelligence(
        server.url, key, TENANT, budget=fast_budget, outbox=tmp_path / "outbox.sqlite3", seed=3
    )
    try:
        yield client
    finally:
        client.close()


def stored_outcomes(server: Any, goal: str) -> list[Any]:
    store = SqliteStore(server.store)
    try:
        return store.outcomes_in_window(TENANT, goal, 0)
    finally:
        store.close()


def test_every_method_round_trips_through_the_service(
    remote: RemoteIntelligence, running: tuple[Any, str]
) -> None:
    server, _ = running
    goal = f"{GOAL}_roundtrip"
    first = remote.register_path(goal, "gpt-4o-mini")
    second = remote.register_path(goal, "gpt-4o", tool_id=["search", "calc"], params={"t": 1})
    assert first["created"] is True and second["tool_id"] == "calc,search"
    assert remote.register_path(goal, "gpt-4o-mini")["created"] is False

    decision = remote.decide(goal, candidate_model_ids=["gpt-4o-mini", "gpt-4o"])
    assert decision["source"] == "service" and decision["path_id"] in {
        first["path_id"],
        second["path_id"],
    }
    assert remote.decide(goal, exploration_rate=1.0)["exploration"] is True  # a Router's rate
    accepted = remote.report_outcome(decision["trace_id"], goal, success=True, cost_usd=0.01)
    assert accepted["status"] == "accepted" and accepted["path_id"] == decision["path_id"]
    updated = remote.update_outcome(decision["trace_id"], goal, success=False)
    assert updated["status"] == "updated" and updated["fields_updated"] == ["success"]
    for i in range(5):
        remote.report_outcome(f"seed-{i}", goal, success=True, model_id="gpt-4o-mini")

    policy = remote.get_policy(goal)
    assert policy["recommended_model"] == "gpt-4o-mini"
    alternative = remote.get_alternative(goal, ["gpt-4o-mini"])
    assert alternative["recommended_model"] == "gpt-4o"
    stats = remote.stats(goal)
    assert stats["total_outcomes"] == 6
    insights = remote.get_insights(goal)
    assert insights["goals"][0]["goal"] == goal and insights["tenant_id"] == TENANT
    assert len(remote.list_paths(goal)["paths"]) == 2
    assert remote.disable_path(second["path_id"])["status"] == "disabled"
    assert len(remote.list_paths(goal)["paths"]) == 1
    assert len(remote.list_paths(goal, include_disabled=True)["paths"]) == 2
    assert remote.enable_path(second["path_id"])["status"] == "enabled"
    assert remote.set_exploration_config(goal, exploration_rate=0.05)["exploration_rate"] == 0.05
    assert remote.get_exploration_config(goal)["exploration_rate"] == 0.05
    assert len(stored_outcomes(server, goal)) == 6


def test_errors_match_the_local_ones(remote: RemoteIntelligence) -> None:
    goal = f"{GOAL}_errors"
    remote.register_path(goal, "gpt-4o")
    with pytest.raises(NotFoundError):
        remote.get_policy(goal)  # no outcome yet
    with pytest.raises(NoPathAvailableError):
        remote.get_alternative(goal, ["gpt-4o"])
    with pytest.raises(NotFoundError):
        remote.update_outcome("never-reported", goal, success=True)
    with pytest.raises(NotFoundError):
        remote.disable_path("path_unknown")
    with pytest.raises(ValidationError, match="min_quality"):
        remote.get_policy(goal, constraints={"min_quality": 2})


def test_a_replayed_outcome_is_stored_once(
    remote: RemoteIntelligence, running: tuple[Any, str], tmp_path: Path
) -> None:
    server, key = running
    goal = f"{GOAL}_replay"
    outcome_id = "f" * 32
    remote.report_outcome("trace-r", goal, success=True, model_id="gpt-4o", outcome_id=outcome_id)
    # Another client (another process after a crash) replays the same outcome.
    other = RemoteIntelligence(server.url, key, TENANT, outbox=tmp_path / "other.sqlite3")
    try:
        again = other.report_outcome(
            "trace-r", goal, success=True, model_id="gpt-4o", outcome_id=outcome_id
        )
    finally:
        other.close()

    assert again["status"] == "accepted"
    assert [o.trace_id for o in stored_outcomes(server, goal)] == ["trace-r"]


def test_a_wrong_key_fails_open_and_keeps_the_outcomes(
    running: tuple[Any, str], tmp_path: Path, fast_budget: RemoteBudget
) -> None:
    server, key = running
    wrong = RemoteIntelligence(
        server.url, "kc_wrong", TENANT, budget=fast_budget, outbox=tmp_path / "outbox.sqlite3"
    )
    try:
        wrong.register_path(f"{GOAL}_auth", "gpt-4o")
        decision = wrong.decide(f"{GOAL}_auth")
        answer = wrong.report_outcome(decision["trace_id"], f"{GOAL}_auth", success=True)
        with pytest.raises(ConfigurationError, match="refused the API key"):
            wrong.list_paths()
    finally:
        wrong.close()
    assert decision["source"] == "fail_open" and answer["status"] == "queued"

    fixed = RemoteIntelligence(server.url, key, TENANT, outbox=tmp_path / "outbox.sqlite3")
    try:
        fixed.flush()
    finally:
        fixed.close()
    assert [o.trace_id for o in stored_outcomes(server, f"{GOAL}_auth")] == [decision["trace_id"]]


def test_an_outcome_reported_just_before_exit_is_delivered_at_exit(
    running: tuple[Any, str], tmp_path: Path, agent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, key = running
    goal = f"{GOAL}_exit"
    outboxes = tmp_path / "agent-outboxes"

    report = agent.finish(agent.start(server.url, key, TENANT, outboxes, "exit", goal), "exit")

    assert report["source"] == "service"
    assert [o.trace_id for o in stored_outcomes(server, goal)] == [report["trace_id"]]
    monkeypatch.setenv("KALIBR_OUTBOX", str(outboxes))
    assert Outbox(default_outbox_path(server.url, TENANT)).count() == 0

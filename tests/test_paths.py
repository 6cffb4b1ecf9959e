"""Registering, listing, disabling and re-enabling paths."""

from __future__ import annotations

from collections import Counter

import pytest

from kalibr_core import Intelligence, NoPathAvailableError, NotFoundError

GOAL = "extract_company"


def test_registration_is_idempotent(intel: Intelligence) -> None:
    first = intel.register_path(GOAL, "gpt-4o", tool_id="search", params={"temperature": 0.3})
    again = intel.register_path(GOAL, "gpt-4o", tool_id=["search"], params={"temperature": 0.3})
    assert first["created"] is True
    assert again["created"] is False
    assert again["path_id"] == first["path_id"]
    assert first == {
        "path_id": first["path_id"],
        "goal": GOAL,
        "model_id": "gpt-4o",
        "tool_id": "search",
        "params": {"temperature": 0.3},
        "risk_level": "low",
        "enabled": True,
        "created": True,
    }
    assert len(intel.list_paths(GOAL)["paths"]) == 1


def test_registration_is_idempotent_across_instances_sharing_a_file(tmp_db: str) -> None:
    with Intelligence(tmp_db) as one, Intelligence(tmp_db) as two:
        a = one.register_path(GOAL, "gpt-4o", tool_id=["b", "a"])
        b = two.register_path(GOAL, "gpt-4o", tool_id=["a", "b"])
        assert a["path_id"] == b["path_id"]
        assert b["created"] is False
        assert len(two.list_paths(GOAL)["paths"]) == 1


def test_re_registering_updates_the_risk_level(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    updated = intel.register_path(GOAL, "gpt-4o", risk_level="high")
    assert updated["risk_level"] == "high"
    assert intel.list_paths(GOAL)["paths"][0]["risk_level"] == "high"


def test_paths_are_listed_per_goal_in_registration_order(intel: Intelligence) -> None:
    intel.register_path(GOAL, "gpt-4o")
    intel.register_path(GOAL, "claude-sonnet-4-20250514")
    intel.register_path("other_goal", "gpt-4o-mini")
    assert [p["model_id"] for p in intel.list_paths(GOAL)["paths"]] == [
        "gpt-4o",
        "claude-sonnet-4-20250514",
    ]
    assert len(intel.list_paths()["paths"]) == 3


def test_disable_is_a_soft_delete(intel: Intelligence) -> None:
    keep = intel.register_path(GOAL, "gpt-4o")["path_id"]
    drop = intel.register_path(GOAL, "gpt-4o-mini")["path_id"]
    for i in range(10):
        intel.report_outcome(f"t{i}", GOAL, success=True, model_id="gpt-4o-mini")
    result = intel.disable_path(drop)
    assert result == {"status": "disabled", "path_id": drop, "goal": GOAL}

    assert [p["path_id"] for p in intel.list_paths(GOAL)["paths"]] == [keep]
    listed = intel.list_paths(GOAL, include_disabled=True)["paths"]
    assert {p["path_id"]: p["enabled"] for p in listed} == {keep: True, drop: False}
    chosen = Counter(intel.decide(GOAL)["path_id"] for _ in range(100))
    assert chosen == {keep: 100}
    # History is kept.
    assert intel.store.count_outcomes("default", GOAL) == 10
    row = next(p for p in intel.stats(GOAL)["paths"] if p["path_id"] == drop)
    assert row["total_outcomes"] == 10
    assert row["enabled"] is False


def test_a_disabled_path_is_not_recommended(intel: Intelligence) -> None:
    best = intel.register_path(GOAL, "gpt-4o")["path_id"]
    intel.register_path(GOAL, "gpt-4o-mini")
    for i in range(30):
        intel.report_outcome(f"a{i}", GOAL, success=True, model_id="gpt-4o")
        intel.report_outcome(f"b{i}", GOAL, success=i % 2 == 0, model_id="gpt-4o-mini")
    assert intel.get_policy(GOAL)["recommended_model"] == "gpt-4o"
    intel.disable_path(best)
    policy = intel.get_policy(GOAL)
    assert policy["recommended_model"] == "gpt-4o-mini"
    assert all(a["path_id"] != best for a in policy["alternatives"])


def test_re_enabling_restores_traffic(intel: Intelligence) -> None:
    only = intel.register_path(GOAL, "gpt-4o")["path_id"]
    intel.disable_path(only)
    with pytest.raises(NoPathAvailableError):
        intel.decide(GOAL)
    assert intel.enable_path(only) == {"status": "enabled", "path_id": only, "goal": GOAL}
    assert intel.decide(GOAL)["path_id"] == only


def test_re_registering_a_disabled_path_keeps_it_disabled(intel: Intelligence) -> None:
    keep = intel.register_path(GOAL, "gpt-4o")["path_id"]
    drop = intel.register_path(GOAL, "gpt-4o-mini")["path_id"]
    intel.decide(GOAL)  # the goal's routing state is loaded
    intel.disable_path(drop)
    again = intel.register_path(GOAL, "gpt-4o-mini")
    assert again["path_id"] == drop
    assert again["enabled"] is False
    assert again["created"] is False
    assert {intel.decide(GOAL)["path_id"] for _ in range(50)} == {keep}


def test_disable_is_seen_by_another_instance_on_the_same_file(tmp_db: str) -> None:
    with Intelligence(tmp_db, sync_interval_s=0.0) as one, Intelligence(tmp_db) as two:
        keep = one.register_path(GOAL, "gpt-4o")["path_id"]
        drop = one.register_path(GOAL, "gpt-4o-mini")["path_id"]
        one.decide(GOAL)
        two.disable_path(drop)
        assert {one.decide(GOAL)["path_id"] for _ in range(50)} == {keep}


def test_disabling_an_unknown_path_raises_not_found(intel: Intelligence) -> None:
    with pytest.raises(NotFoundError, match="path_nope"):
        intel.disable_path("path_nope")
    with pytest.raises(NotFoundError):
        intel.enable_path("path_nope")


def test_paths_are_per_tenant(intel: Intelligence) -> None:
    path_id = intel.register_path(GOAL, "gpt-4o", tenant="acme")["path_id"]
    assert intel.decide(GOAL, tenant="acme")["path_id"] == path_id
    with pytest.raises(NoPathAvailableError):
        intel.decide(GOAL)
    with pytest.raises(NotFoundError):
        intel.disable_path(path_id)  # the default tenant has no such path
    assert intel.list_paths(GOAL)["paths"] == []

"""Tenant isolation, endpoint by endpoint: a key of acme never reads or changes globex's data.

globex builds a goal with paths, outcomes, a config and a correction; then acme, using the
same goal name and globex's own path and trace ids, tries every endpoint.
"""

from __future__ import annotations

import pytest

GOAL = "shared_goal_name"


@pytest.fixture
def globex_world(api, globex):
    """globex's goal: two paths, 40 outcomes each, a tuned config; returns its ids."""
    api.seed(globex, GOAL, {"gpt-4o": 0.9, "claude-x": 0.4}, n=40, failure_category="timeout")
    api.ok(api.post(globex, "/api/v1/routing/config", {"goal": GOAL, "exploration_rate": 0.2}))
    decision = api.decide(globex, GOAL)
    api.report(globex, decision["trace_id"], GOAL, success=True)
    paths = api.ok(api.get(globex, "/api/v1/routing/paths", goal=GOAL))["paths"]
    return {
        "trace_id": decision["trace_id"],
        "path_ids": [p["path_id"] for p in paths],
        "stats": api.stats(globex, GOAL),
    }


def test_reads_see_nothing_of_the_other_tenant(api, acme, globex_world):
    assert api.ok(api.get(acme, "/api/v1/routing/paths", goal=GOAL))["paths"] == []
    assert api.ok(api.get(acme, "/api/v1/routing/paths", include_disabled="true"))["paths"] == []
    stats = api.stats(acme, GOAL)
    assert (stats["total_outcomes"], stats["paths"], stats["decisions"]) == (0, [], 0)
    insights = api.ok(api.get(acme, "/api/v1/intelligence/insights"))
    assert insights["tenant_id"] == "acme"
    assert insights["goals"] == []
    scoped = api.ok(api.get(acme, "/api/v1/intelligence/insights", goal=GOAL))
    assert scoped["goals"][0]["sample_count"] == 0
    config = api.ok(api.get(acme, "/api/v1/routing/config", goal=GOAL))
    assert config["exploration_rate"] is None


def test_decisions_policy_alternatives_and_recommendations_are_per_tenant(api, acme, globex_world):
    for path, body in (
        ("/api/v1/routing/decide", {"goal": GOAL}),
        ("/api/v1/intelligence/get-alternative", {"goal": GOAL, "exclude_models": []}),
        ("/api/v1/intelligence/recommend", {"goal": GOAL}),
    ):
        assert api.error(api.post(acme, path, body), 404)["type"] == "no_path_available"
    policy = api.post(acme, "/api/v1/intelligence/policy", {"goal": GOAL})
    assert api.error(policy, 404)["type"] == "not_found"


def test_writes_never_reach_the_other_tenant(client, api, acme, globex, globex_world):
    trace_id = globex_world["trace_id"]
    update = {"trace_id": trace_id, "goal": GOAL, "success": False}
    assert api.error(api.post(acme, "/api/v1/intelligence/update-outcome", update), 404)
    for path_id in globex_world["path_ids"]:
        response = client.delete(f"/api/v1/routing/paths/{path_id}", headers=acme.headers)
        assert api.error(response, 404)["type"] == "not_found"
        response = client.post(f"/api/v1/routing/paths/{path_id}/enable", headers=acme.headers)
        assert api.error(response, 404)["type"] == "not_found"
    # acme reporting on globex's trace id is acme's own outcome, never globex's.
    assert api.report(acme, trace_id, GOAL, success=False, model_id="gpt-4o")["path_id"] is None
    api.ok(api.post(acme, "/api/v1/routing/config", {"goal": GOAL, "exploration_rate": 0.9}))
    assert api.stats(globex, GOAL) == globex_world["stats"]
    globex_paths = api.ok(api.get(globex, "/api/v1/routing/paths", goal=GOAL))["paths"]
    assert all(p["enabled"] for p in globex_paths)
    config = api.ok(api.get(globex, "/api/v1/routing/config", goal=GOAL))
    assert config["exploration_rate"] == 0.2


def test_the_same_path_in_two_tenants_is_disabled_separately(client, api, acme, globex):
    mine = api.register(acme, GOAL, "gpt-4o")["path_id"]
    theirs = api.register(globex, GOAL, "gpt-4o")["path_id"]
    assert mine == theirs  # path ids are content hashes: equal across tenants
    api.ok(client.delete(f"/api/v1/routing/paths/{mine}", headers=acme.headers))
    assert api.ok(api.get(globex, "/api/v1/routing/paths", goal=GOAL))["paths"][0]["enabled"]
    assert api.decide(globex, GOAL)["path_id"] == theirs
    assert api.error(api.post(acme, "/api/v1/routing/decide", {"goal": GOAL}), 404)


def test_outcomes_with_the_same_idempotency_key_in_two_tenants_both_count(api, acme, globex):
    for creds in (acme, globex):
        api.register(creds, GOAL, "gpt-4o")
        api.report(creds, "trace", GOAL, model_id="gpt-4o", outcome_id="same-key")
    assert api.stats(acme, GOAL)["total_outcomes"] == 1
    assert api.stats(globex, GOAL)["total_outcomes"] == 1

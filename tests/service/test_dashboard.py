"""The dashboard's page and its data endpoint, ``GET /api/v1/dashboard/summary``.

The page is static and public; everything it shows comes from the summary endpoint, which
needs a key like every other data endpoint and sees only the key's tenant. Older history is
written to the store directly (as another process would) so the timeline spans a day.
"""

from __future__ import annotations

import re
import time
from itertools import pairwise
from typing import Any

import pytest

from kalibr_core import Intelligence
from kalibr_core.store import OutcomeRecord

SUMMARY = "/api/v1/dashboard/summary"


def summary(api, creds, **params: Any) -> dict[str, Any]:
    return api.ok(api.get(creds, SUMMARY, **params))


def goal_entry(body: dict[str, Any], goal: str) -> dict[str, Any]:
    entries = [g for g in body["goals"] if g["goal"] == goal]
    assert len(entries) == 1, [g["goal"] for g in body["goals"]]
    return entries[0]


def backdated(
    intel: Intelligence, tenant: str, goal: str, outcomes: list[tuple[float, str, str, bool]]
) -> None:
    """Store ``(created_at, path_id, model_id, success)`` outcomes, in time order."""
    intel.store.record_outcomes(
        [
            OutcomeRecord(
                tenant=tenant,
                goal=goal,
                pipeline_id="",
                trace_id=f"history-{i}",
                path_id=path_id,
                model_id=model,
                tool_id=None,
                params=None,
                success=success,
                score=None,
                value=float(success),
                failure_category=None,
                failure_reason=None,
                metadata=None,
                cost_usd=None,
                latency_ms=None,
                input_tokens=None,
                output_tokens=None,
                created_at=at,
            )
            for i, (at, path_id, model, success) in enumerate(sorted(outcomes))
        ]
    )


# -- the page ---------------------------------------------------------------------------------
def test_page_is_public_static_and_self_contained(client):
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "Sign in" in page.text and "<script>" not in page.text  # no inline script
    assets = {"dashboard/dashboard.js": "text/javascript", "dashboard/dashboard.css": "text/css"}
    for asset, media_type in assets.items():
        assert f'"{asset}"' in page.text
        response = client.get(f"/{asset}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media_type)
        # No CDN, font or tracker: the page works on a machine without network.
        assert not re.search(r"(src|href|url|fetch)\(?\s*=?\s*[\"']?https?://", response.text)
    assert not re.search(r"(src|href)=\"https?://", page.text)
    script = client.get("/dashboard/dashboard.js").text
    assert "sessionStorage" in script and "localStorage" not in script
    assert ".innerHTML" not in script  # service data goes in as text, never as markup
    assert "/dashboard" not in client.get("/openapi.json").json()["paths"]


# -- authentication and tenants ---------------------------------------------------------------
def test_summary_needs_a_valid_key_for_the_tenant(client, api, acme, globex):
    api.error(client.get(SUMMARY), 401)
    api.error(client.get(SUMMARY, headers={"X-API-Key": "kc_wrong", "X-Tenant-ID": "acme"}), 401)
    mixed = {"X-API-Key": globex.key, "X-Tenant-ID": "acme"}
    assert "not valid for tenant" in api.error(client.get(SUMMARY, headers=mixed), 401)["message"]
    assert summary(api, acme)["tenant_id"] == "acme"


def test_summary_shows_only_the_tenants_goals(api, acme, globex):
    api.seed(acme, "acme_goal", {"gpt-4o": 0.9}, n=10)
    api.seed(globex, "globex_goal", {"claude-x": 0.5}, n=10)
    assert [g["goal"] for g in summary(api, acme)["goals"]] == ["acme_goal"]
    assert [g["goal"] for g in summary(api, globex)["goals"]] == ["globex_goal"]
    # Naming another tenant's goal shows an empty goal, not its data.
    foreign = goal_entry(summary(api, acme, goal="globex_goal"), "globex_goal")
    assert foreign["sample_count"] == 0 and foreign["paths"] == []
    assert foreign["timeline"]["paths"] == []
    assert all(b["outcomes"] == 0 for b in foreign["timeline"]["buckets"])
    assert summary(api, acme)["summary"]["total_outcomes"] == 10


# -- the data ---------------------------------------------------------------------------------
def test_goal_shows_status_paths_signals_and_disabled_paths(api, acme):
    api.seed(
        acme,
        "extract",
        {"gpt-4o": 0.95, "claude-x": 0.4, "mistral-small": 0.5},
        n=20,
        cost={"gpt-4o": 0.004, "claude-x": 0.001, "mistral-small": 0.0005},
        latency={"gpt-4o": 900, "claude-x": 400, "mistral-small": 300},
    )
    mistral = next(
        p for p in api.stats(acme, "extract")["paths"] if p["model_id"] == "mistral-small"
    )
    api.ok(api.client.delete(f"/api/v1/routing/paths/{mistral['path_id']}", headers=acme.headers))
    goal = goal_entry(summary(api, acme), "extract")
    assert goal["status"] in {"healthy", "degrading", "failing"}
    assert goal["sample_count"] == 60
    rows = {p["model_id"]: p for p in goal["paths"]}
    assert rows["gpt-4o"]["success_rate"] == 0.95
    assert rows["gpt-4o"]["sample_count"] == 20
    assert rows["gpt-4o"]["avg_cost_usd"] == 0.004
    assert rows["claude-x"]["avg_latency_ms"] == 400
    assert {p["trend"] for p in rows.values()} <= {"improving", "stable", "degrading"}
    underperforming = [s for s in goal["actionable_signals"] if s["type"] == "path_underperforming"]
    assert {s["data"]["model_id"] for s in underperforming} == {"claude-x", "mistral-small"}
    # The disabled path is listed apart, with its history; the timeline still draws it.
    assert [p["model_id"] for p in goal["disabled_paths"]] == ["mistral-small"]
    assert goal["disabled_paths"][0]["sample_count"] == 20
    timeline_paths = {p["model_id"]: p["enabled"] for p in goal["timeline"]["paths"]}
    assert timeline_paths == {"gpt-4o": True, "claude-x": True, "mistral-small": False}


def test_buckets_add_up_to_the_window(api, acme):
    api.seed(acme, "extract", {"gpt-4o": 0.8, "claude-x": 0.5}, n=15)
    api.report(acme, "stray", "extract", model_id="never-registered")  # no path: unattributed
    body = summary(api, acme, window_hours=6, buckets=7)
    goal = goal_entry(body, "extract")
    buckets = goal["timeline"]["buckets"]
    assert len(buckets) == 7
    assert body["end"] - body["start"] == pytest.approx(6 * 3600)
    assert body["bucket_seconds"] == pytest.approx(6 * 3600 / 7)
    assert buckets[0]["start"] == pytest.approx(body["start"])
    assert buckets[-1]["end"] == pytest.approx(body["end"])
    for before, after in pairwise(buckets):
        assert before["end"] == pytest.approx(after["start"])
    assert sum(b["outcomes"] for b in buckets) == goal["sample_count"] == 31
    assert sum(b["unattributed"] for b in buckets) == 1
    for bucket in buckets:
        points = bucket["paths"].values()
        assert sum(p["outcomes"] for p in points) + bucket["unattributed"] == bucket["outcomes"]
        assert sum(p["successes"] for p in points) <= bucket["successes"]
        shares = sum(p["traffic_share"] for p in points) + bucket["unattributed"] / max(
            bucket["outcomes"], 1
        )
        assert shares == pytest.approx(1.0 if bucket["outcomes"] else 0.0, abs=1e-3)
    # Everything was reported just now: it is all in the last bucket.
    assert buckets[-1]["outcomes"] == 31


def test_timeline_shows_a_degradation_and_the_traffic_moving_away(api, acme, service_intel):
    paths = {m: api.register(acme, "extract", m)["path_id"] for m in ("model-a", "model-b")}
    now = time.time()
    hour = 3600.0
    a_id, b_id = paths["model-a"], paths["model-b"]
    history = []
    for h in range(24):  # one slice per hour, oldest first; model-a breaks at hour 12
        start = now - (24 - h) * hour + 60
        a_successes, a_n = (9, 10) if h < 12 else (1, 4)
        history += [(start + i * 60, a_id, "model-a", i < a_successes) for i in range(a_n)]
        history += [(start + i * 60 + 1, b_id, "model-b", i < 8) for i in range(10)]
    backdated(service_intel, "acme", "extract", history)

    goal = goal_entry(summary(api, acme, window_hours=24, buckets=24), "extract")
    buckets = goal["timeline"]["buckets"]
    assert [b["outcomes"] for b in buckets] == [20] * 12 + [14] * 12
    rolling_a = [b["paths"][a_id]["rolling_success_rate"] for b in buckets]
    rolling_b = [b["paths"][b_id]["rolling_success_rate"] for b in buckets]
    assert all(rate == 0.9 for rate in rolling_a[1:12])  # the last 20 outcomes: 90%
    assert rolling_a[-1] == 0.25  # the last 20 outcomes all after the break: 1 in 4
    assert rolling_a[12] > rolling_a[13] > rolling_a[-1]  # falls as failures replace successes
    assert all(rate == 0.8 for rate in rolling_b[1:])
    assert buckets[0]["paths"][a_id]["traffic_share"] == 0.5
    assert buckets[-1]["paths"][a_id]["traffic_share"] == pytest.approx(4 / 14, abs=1e-3)
    assert buckets[-1]["paths"][a_id]["success_rate"] == 0.25
    # What the insights make of the same outcomes agrees with the picture.
    assert goal["trend"] == "degrading"
    assert goal["status"] in {"degrading", "failing"}


def test_query_is_validated(client, api, acme):
    for params in (
        {"buckets": 0},
        {"buckets": 241},
        {"buckets": "many"},
        {"window_hours": 0},
        {"window_hours": -1},
        {"goal": "not a goal"},
    ):
        error = api.error(api.get(acme, SUMMARY, **params), 422)
        assert error["field"] in params, (params, error)
    body = summary(api, acme)
    assert body["window_hours"] == 24 and body["goals"] == []
    assert body["summary"]["total_goals"] == 0

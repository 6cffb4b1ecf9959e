"""The dashboard: a web page over the service for watching outcomes, degrading paths and trends.

``GET /dashboard`` serves a static page (HTML, CSS and vanilla JS shipped in the package, no
CDN, no build step). The page holds no data: it asks for an API key and tenant, keeps them in
``sessionStorage`` (gone when the tab closes, never in a URL) and polls
``GET /api/v1/dashboard/summary`` with the usual ``X-API-Key`` / ``X-Tenant-ID`` headers. That
endpoint is the only one with data, authenticated like the rest of the API; it joins the goals'
insights with their timelines, both computed in :class:`~kalibr_core.Intelligence`.

The page is served with a Content-Security-Policy that allows only its own script, style and
API: no inline script, no third-party origin, no framing.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import Field

from kalibr_core.service._dependencies import Intel, Tenant
from kalibr_core.service._models import (
    NAME_PATTERN,
    CrossGoalSummary,
    ErrorResponse,
    FailureMode,
    InsightPath,
    Signal,
    Trend,
    WindowHours,
    _Response,
)

MAX_BUCKETS = 240

_ASSETS = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


# -- response bodies --------------------------------------------------------------------------
class TimelinePath(_Response):
    """A path of the goal, in the timeline's (registration) order."""

    path_id: str
    model_id: str
    tool_id: str | None
    enabled: bool


class TimelinePoint(_Response):
    """One path in one bucket."""

    outcomes: int
    successes: int
    traffic_share: float = Field(description="Share of the bucket's outcomes.")
    success_rate: float | None
    rolling_success_rate: float | None


class TimelineBucket(_Response):
    """A slice of the window; ``outcomes`` = the paths' outcomes + ``unattributed``."""

    start: float
    end: float
    outcomes: int
    successes: int
    success_rate: float | None
    unattributed: int
    paths: dict[str, TimelinePoint]


class Timeline(_Response):
    """A goal's outcomes over the window, oldest bucket first."""

    paths: list[TimelinePath]
    buckets: list[TimelineBucket]


class DashboardGoal(_Response):
    """One goal as the dashboard shows it: its insights, disabled paths and timeline."""

    goal: str
    status: Literal["healthy", "degrading", "failing", "insufficient_data"]
    success_rate: float | None
    sample_count: int
    trend: Trend
    trend_delta: float
    confidence: float
    top_failure_modes: list[FailureMode]
    paths: list[InsightPath]
    actionable_signals: list[Signal]
    disabled_paths: list[InsightPath]
    timeline: Timeline


class DashboardSummary(_Response):
    """``GET /api/v1/dashboard/summary``."""

    tenant_id: str
    generated_at: str
    window_hours: float
    start: float = Field(description="Start of the window (seconds since the epoch).")
    end: float = Field(description="End of the window: when the summary was computed.")
    bucket_seconds: float
    rolling_outcomes: int = Field(
        description="How many recent outcomes of a path its rolling success rate covers."
    )
    summary: CrossGoalSummary
    goals: list[DashboardGoal]


# -- routes -----------------------------------------------------------------------------------
dashboard_routes = APIRouter(tags=["dashboard"])


@cache
def _asset(name: str) -> bytes:
    return resources.files("kalibr_core.service").joinpath("static", name).read_bytes()


def _serve(name: str) -> Response:
    return Response(_asset(name), media_type=_ASSETS[name], headers=_PAGE_HEADERS)


@dashboard_routes.get("/dashboard", include_in_schema=False)
def dashboard_page() -> Response:
    """The dashboard page (no data in it, so no authentication; its data needs a key)."""
    return _serve("dashboard.html")


@dashboard_routes.get("/dashboard/dashboard.css", include_in_schema=False)
def dashboard_style() -> Response:
    """The page's stylesheet."""
    return _serve("dashboard.css")


@dashboard_routes.get("/dashboard/dashboard.js", include_in_schema=False)
def dashboard_script() -> Response:
    """The page's script."""
    return _serve("dashboard.js")


@dashboard_routes.get(
    "/api/v1/dashboard/summary",
    response_model=DashboardSummary,
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong X-API-Key / X-Tenant-ID."},
        422: {"model": ErrorResponse, "description": "Invalid query; error.message says why."},
        500: {"model": ErrorResponse, "description": "Unexpected error (logged by the server)."},
        503: {"model": ErrorResponse, "description": "The store is unavailable; retry later."},
    },
)
def dashboard_summary(
    intel: Intel,
    tenant: Tenant,
    window_hours: Annotated[WindowHours, Query(description="Time window in hours.")] = 24,
    buckets: Annotated[
        int, Query(ge=1, le=MAX_BUCKETS, description="Time slices of the window's timeline.")
    ] = 24,
    goal: Annotated[
        str | None,
        Query(pattern=NAME_PATTERN, max_length=128, description="Goal name; omit for all."),
    ] = None,
) -> dict[str, Any]:
    """Everything the dashboard shows, per goal: status, paths, signals, disabled paths, timeline.

    A goal's fields are those of ``/api/v1/intelligence/insights`` (same window), plus
    ``disabled_paths`` and ``timeline``: the window cut into ``buckets`` slices with each
    path's traffic share and rolling success rate.
    """
    insights = intel.get_insights(goal, window_hours, tenant=tenant)
    # Read second: goals are never removed, so every goal of the insights has a timeline.
    series = intel.timeline(goal, window_hours, buckets, tenant=tenant)
    timelines = {entry["goal"]: entry for entry in series["goals"]}
    goals = []
    for entry in insights["goals"]:
        goals.append(
            {
                **entry,
                "disabled_paths": [p for p in entry["paths"] if not p["enabled"]],
                "timeline": timelines[entry["goal"]],
            }
        )
    return {
        "tenant_id": tenant,
        "generated_at": insights["generated_at"],
        "window_hours": insights["window_hours"],
        "start": series["start"],
        "end": series["end"],
        "bucket_seconds": series["bucket_seconds"],
        "rolling_outcomes": series["rolling_outcomes"],
        "summary": insights["cross_goal_summary"],
        "goals": goals,
    }

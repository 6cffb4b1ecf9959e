"""The HTTP intelligence service: the spec's REST API over one :class:`Intelligence`.

Every route is a thin call into ``Intelligence`` scoped to the tenant of the request's API key;
no routing logic lives here.

Where a route runs is chosen for the hot path. ``decide`` is in-memory work of a few tens of
microseconds: it runs in the event loop, as do the dependencies of every route, because a trip
through the thread pool costs more than the work. ``report-outcome`` awaits its durable write
in the thread pool (concurrent writes share a commit, see ``SqliteStore.record_outcomes``), so
the loop keeps serving while the store commits. The other routes read or write the store and
are plain functions that FastAPI runs in its thread pool; ``Intelligence`` is thread-safe.
Well-formed JSON POSTs skip FastAPI's per-request machinery (``_fast_path``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Response
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from kalibr_core._errors import ConfigurationError, NoPathAvailableError
from kalibr_core._intelligence import Intelligence
from kalibr_core._version import __version__
from kalibr_core.service._auth import KEY_CACHE_TTL_S, KeyAuthenticator
from kalibr_core.service._dashboard import dashboard_routes
from kalibr_core.service._dependencies import Intel, Tenant
from kalibr_core.service._errors import install_error_handlers
from kalibr_core.service._fast_path import FastPath
from kalibr_core.service._middleware import BodyLimitMiddleware, CatchAllMiddleware
from kalibr_core.service._models import (
    NAME_PATTERN,
    AlternativeRequest,
    AlternativeResponse,
    DecideRequest,
    DecideResponse,
    ErrorResponse,
    ExplorationConfigRequest,
    ExplorationConfigResponse,
    HealthResponse,
    InsightsResponse,
    PathListResponse,
    PathStatusResponse,
    PolicyRequest,
    PolicyResponse,
    RecommendRequest,
    RecommendResponse,
    RegisteredPathResponse,
    RegisterPathRequest,
    ReportOutcomeRequest,
    ReportOutcomeResponse,
    StatsResponse,
    UpdateOutcomeRequest,
    UpdateOutcomeResponse,
)
from kalibr_core.service._recommend import explain, rank_paths

logger = logging.getLogger("kalibr_core.service")

MAX_BODY_BYTES = 1 << 20


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


_COMMON: dict[int | str, dict[str, Any]] = {
    401: _error("Missing or wrong X-API-Key / X-Tenant-ID."),
    422: _error("Invalid request; error.message says which field and why."),
    500: _error("Unexpected error (logged by the server)."),
    503: _error("The store is unavailable; retry later."),
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _error("Not found; see error.message.")}


GoalQuery = Annotated[str, Query(pattern=NAME_PATTERN, max_length=128, description="Goal name.")]
OptionalGoalQuery = Annotated[
    str | None, Query(pattern=NAME_PATTERN, max_length=128, description="Goal name; omit for all.")
]
PipelineQuery = Annotated[
    str | None, Query(pattern=NAME_PATTERN, max_length=128, description="Pipeline scope.")
]
PathIdParam = Annotated[str, Path(min_length=1, max_length=128, description="A path_id.")]

routing_routes = APIRouter(prefix="/api/v1/routing", tags=["routing"], responses=_COMMON)
intelligence_routes = APIRouter(
    prefix="/api/v1/intelligence", tags=["intelligence"], responses=_COMMON
)
health_routes = APIRouter(prefix="/api/v1/intelligence", tags=["health"])


# -- routing ----------------------------------------------------------------------------------
@routing_routes.post("/decide", response_model=DecideResponse, responses=_NOT_FOUND)
async def decide(body: DecideRequest, intel: Intel, tenant: Tenant) -> dict[str, Any]:
    """Choose a path for one call of a goal; pass the ``trace_id`` to report-outcome.

    404 (``no_path_available``) when the goal has no enabled path among the candidates.
    """
    # In the event loop: in-memory work, except a short store read when the goal's view of
    # other processes' outcomes is older than Intelligence.sync_interval_s.
    return intel.decide(
        body.goal,
        body.task_risk_level or "low",
        body.candidate_model_ids,
        body.pipeline_id,
        exploration_rate=body.exploration_rate,
        tenant=tenant,
    )


@routing_routes.post("/paths", response_model=RegisteredPathResponse)
def register_path(body: RegisterPathRequest, intel: Intel, tenant: Tenant) -> dict[str, Any]:
    """Register a path for a goal. Idempotent: the same path answers the same ``path_id``."""
    return intel.register_path(
        body.goal,
        body.model_id,
        body.tool_id,
        body.params,
        body.risk_level or "low",
        tenant=tenant,
    )


@routing_routes.get("/paths", response_model=PathListResponse)
def list_paths(
    intel: Intel,
    tenant: Tenant,
    goal: OptionalGoalQuery = None,
    include_disabled: Annotated[bool, Query(description="Also list disabled paths.")] = False,
) -> dict[str, Any]:
    """The registered paths (of one goal if given), in registration order."""
    return intel.list_paths(goal, include_disabled, tenant=tenant)


@routing_routes.delete("/paths/{path_id}", response_model=PathStatusResponse, responses=_NOT_FOUND)
def disable_path(path_id: PathIdParam, intel: Intel, tenant: Tenant) -> dict[str, Any]:
    """Soft-disable a path: traffic stops, its outcome history is kept."""
    return intel.disable_path(path_id, tenant=tenant)


@routing_routes.post(
    "/paths/{path_id}/enable", response_model=PathStatusResponse, responses=_NOT_FOUND
)
def enable_path(path_id: PathIdParam, intel: Intel, tenant: Tenant) -> dict[str, Any]:
    """Re-enable a disabled path."""
    return intel.enable_path(path_id, tenant=tenant)


@routing_routes.get("/stats", response_model=StatsResponse)
def stats(
    intel: Intel, tenant: Tenant, goal: GoalQuery, pipeline_id: PipelineQuery = None
) -> dict[str, Any]:
    """Goal-level statistics with live per-path performance (a goal never seen is empty)."""
    return intel.stats(goal, pipeline_id=pipeline_id, tenant=tenant)


@routing_routes.get("/config", response_model=ExplorationConfigResponse)
def get_config(intel: Intel, tenant: Tenant, goal: GoalQuery) -> dict[str, Any]:
    """The exploration config of a goal (defaults when never set)."""
    return intel.get_exploration_config(goal, tenant=tenant)


@routing_routes.post("/config", response_model=ExplorationConfigResponse)
def set_config(body: ExplorationConfigRequest, intel: Intel, tenant: Tenant) -> dict[str, Any]:
    """Change some exploration settings of a goal; absent fields keep their value.

    ``exploration_rate: null`` returns the rate to automatic; null elsewhere keeps the value.
    """
    fields = body.model_dump(exclude_unset=True, exclude={"goal"})
    return intel.set_exploration_config(body.goal, tenant=tenant, **fields)


# -- intelligence -----------------------------------------------------------------------------
@intelligence_routes.post("/report-outcome", response_model=ReportOutcomeResponse)
async def report_outcome(
    body: ReportOutcomeRequest, intel: Intel, tenant: Tenant
) -> dict[str, Any]:
    """Record an outcome; durable when answered.

    Trace ids never issued are accepted (attributed by ``model_id``), several outcomes per
    trace id are accepted, and a replay with the same ``outcome_id`` is counted once.
    """
    # Durable when answered; the reports of all requests meanwhile share one commit, made by
    # the Intelligence's reporter thread while the event loop keeps serving.
    return await intel.areport_outcome(
        body.trace_id,
        body.goal,
        body.success,
        body.score,
        body.failure_reason,
        body.failure_category,
        body.metadata,
        body.model_id,
        body.tool_id,
        body.execution_params,
        cost_usd=body.cost_usd,
        latency_ms=body.latency_ms,
        input_tokens=body.input_tokens,
        output_tokens=body.output_tokens,
        pipeline_id=body.pipeline_id,
        outcome_id=body.outcome_id,
        tenant=tenant,
    )


@intelligence_routes.post(
    "/update-outcome", response_model=UpdateOutcomeResponse, responses=_NOT_FOUND
)
def update_outcome(body: UpdateOutcomeRequest, intel: Intel, tenant: Tenant) -> dict[str, Any]:
    """Correct the latest outcome of a trace id and goal; null fields keep their value.

    404 when no outcome exists for the trace id and goal.
    """
    return intel.update_outcome(
        body.trace_id,
        body.goal,
        body.success,
        body.score,
        body.failure_reason,
        body.failure_category,
        body.metadata,
        tenant=tenant,
    )


@intelligence_routes.get("/insights", response_model=InsightsResponse)
def insights(
    intel: Intel,
    tenant: Tenant,
    window_hours: Annotated[
        float, Query(gt=0, le=24 * 3650, description="Time window in hours.")
    ] = 168,
    goal: OptionalGoalQuery = None,
) -> dict[str, Any]:
    """Structured diagnostics per goal (schema_version 1.0)."""
    return intel.get_insights(goal, window_hours, tenant=tenant)


@intelligence_routes.post("/policy", response_model=PolicyResponse, responses=_NOT_FOUND)
def policy(body: PolicyRequest, intel: Intel, tenant: Tenant) -> dict[str, Any]:
    """The historically best path, deterministically. 404 when the goal has no outcome yet."""
    constraints = body.constraints.model_dump(exclude_none=True) if body.constraints else None
    return intel.get_policy(
        body.goal,
        constraints,
        body.window_hours,
        pipeline_id=body.pipeline_id,
        include_tools=True if body.include_tools is None else body.include_tools,
        include_params=body.include_params,
        task_type=body.task_type,
        tenant=tenant,
    )


@intelligence_routes.post(
    "/get-alternative", response_model=AlternativeResponse, responses=_NOT_FOUND
)
def get_alternative(body: AlternativeRequest, intel: Intel, tenant: Tenant) -> dict[str, Any]:
    """The next best path after excluding models already tried.

    404 (``no_path_available``) when every path is excluded or filtered out.
    """
    constraints = body.constraints.model_dump(exclude_none=True) if body.constraints else None
    return intel.get_alternative(
        body.goal,
        body.exclude_models,
        constraints,
        body.window_hours,
        pipeline_id=body.pipeline_id,
        task_type=body.task_type,
        tenant=tenant,
    )


@intelligence_routes.post("/recommend", response_model=RecommendResponse, responses=_NOT_FOUND)
def recommend(body: RecommendRequest, intel: Intel, tenant: Tenant) -> dict[str, Any]:
    """Rank the goal's enabled paths for cost, quality, latency or a balance of the three.

    404 (``no_path_available``) when the goal has no enabled path.
    """
    optimize_for = body.optimize_for or "balanced"
    rows = intel.stats(body.goal, pipeline_id=body.pipeline_id, tenant=tenant)["paths"]
    ranked = rank_paths(rows, optimize_for)
    if not ranked:
        raise NoPathAvailableError(
            f"goal {body.goal!r} has no enabled path; register one with POST /api/v1/routing/paths",
            goal=body.goal,
        )
    return {
        "goal": body.goal,
        "optimize_for": optimize_for,
        "recommended_model": ranked[0]["model_id"],
        "recommended_path_id": ranked[0]["path_id"],
        "reasoning": explain(ranked, optimize_for),
        "ranking": ranked,
    }


# -- health -----------------------------------------------------------------------------------
@health_routes.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "The store is unhealthy."}},
)
def health(intel: Intel, response: Response) -> dict[str, Any]:
    """Service and store health (no authentication). 503 when the store is unhealthy."""
    started = time.perf_counter()
    try:
        state = intel.store.health()
    except Exception:  # a probe must answer, whatever the store does
        logger.warning("the store's health check failed", exc_info=True)
        state = {"status": "unhealthy"}
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    healthy = state.get("status") == "healthy"
    if not healthy:
        response.status_code = 503
    version = state.get("schema_version")
    return {
        "status": "healthy" if healthy else "unhealthy",
        "version": __version__,
        "store": {
            "status": "healthy" if healthy else "unhealthy",
            "backend": state.get("backend"),
            "schema_version": version if isinstance(version, int) else None,
            "latency_ms": elapsed,
        },
    }


# -- the app ----------------------------------------------------------------------------------
_DESCRIPTION = """\
Outcome-based routing for LLM agents: register paths for a goal, ask for a decision, report
what happened, and the routing learns.

Every endpoint but `GET /api/v1/intelligence/health` needs two headers: `X-API-Key` (create one
with `kalibr-core keys create --tenant TENANT`) and `X-Tenant-ID` (the key's tenant). Errors
are `{"error": {"type", "message", "field"?}}`.
"""


class _ServiceApp(FastAPI):
    """FastAPI, with the two credential headers declared as required together.

    FastAPI lists each security dependency as an alternative (``[{ApiKey}, {TenantId}]``: either
    one); the service needs both (``[{ApiKey, TenantId}]``).
    """

    fast_path: FastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # as Starlette does: the fast path reads the app's state from it
        if self.fast_path is not None:
            await self.fast_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            document = super().openapi()
            for item in document.get("paths", {}).values():
                for operation in item.values():
                    alternatives = operation.get("security")
                    if alternatives:
                        operation["security"] = [{k: v for r in alternatives for k, v in r.items()}]
            self.openapi_schema = document
        return self.openapi_schema


def _operation_id(route: APIRoute) -> str:
    return route.name


def create_app(
    intelligence: Intelligence | None = None,
    *,
    store_url: str | None = None,
    bootstrap_key: str | None = None,
    bootstrap_tenant: str = "default",
    max_body_bytes: int = MAX_BODY_BYTES,
    key_cache_ttl_s: float = KEY_CACHE_TTL_S,
) -> FastAPI:
    """Build the service's ASGI app.

    Args:
        intelligence: The Intelligence to serve (the caller closes it). None opens one over
            ``store_url`` and closes it when the app shuts down.
        store_url: Store URL for :func:`~kalibr_core.store.open_store` when ``intelligence`` is
            None (None: ``$KALIBR_STORE_URL``, else the default SQLite file).
        bootstrap_key: An API key accepted for ``bootstrap_tenant`` without being stored
            (local development; see docs/service.md).
        bootstrap_tenant: The tenant of ``bootstrap_key``.
        max_body_bytes: Larger request bodies are refused with 413.
        key_cache_ttl_s: How long an API key found in the store is trusted without asking
            again: a revocation by another process (``kalibr-core keys revoke``, another
            replica) takes effect within this delay. 0: ask the store on every request.

    Example:
        >>> from kalibr_core import Intelligence
        >>> with Intelligence(":memory:") as intel:
        ...     create_app(intel).title
        'kalibr-core intelligence service'
    """
    if intelligence is not None and store_url is not None:
        raise ConfigurationError("give an Intelligence or a store_url, not both")
    owned = intelligence is None
    intel = Intelligence(store_url) if intelligence is None else intelligence

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                intel.close()

    app = _ServiceApp(
        title="kalibr-core intelligence service",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        strict_content_type=False,  # a JSON body sent without Content-Type is still read
        generate_unique_id_function=_operation_id,
    )
    app.state.intelligence = intel
    app.state.authenticator = KeyAuthenticator(
        intel.store,
        bootstrap_key=bootstrap_key,
        bootstrap_tenant=bootstrap_tenant,
        cache_ttl_s=key_cache_ttl_s,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(CatchAllMiddleware)
    app.include_router(routing_routes)
    app.include_router(intelligence_routes)
    app.include_router(health_routes)
    app.include_router(dashboard_routes)
    # In front of everything: well-formed requests of the busy routes skip the framework.
    app.fast_path = FastPath(
        partial(FastAPI.__call__, app),
        [*routing_routes.routes, *intelligence_routes.routes],
        max_bytes=max_body_bytes,
    )
    return app

"""Request and response bodies of the HTTP service (the spec's field names, pydantic models).

Requests are tolerant the way existing clients need: unknown fields are ignored and every
optional field may be sent as an explicit ``null``, which means "not given" (the default).
The engine still validates every value (``kalibr_core._domain``); the constraints declared here
repeat the ones it enforces so the OpenAPI document describes what is accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"
_NAME_HELP = "1-128 characters of letters, digits and '_', '.', ':', '-'"
_MAX_INT = 2**63 - 1  # the stores keep integers as signed 64-bit values

Goal = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        max_length=128,
        description=f"Goal name: {_NAME_HELP}.",
        examples=["extract_company"],
    ),
]
PipelineId = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        max_length=128,
        description=f"Pipeline scope (routing state is kept per goal and pipeline): {_NAME_HELP}.",
    ),
]
TraceId = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        max_length=128,
        description=f"Trace id: {_NAME_HELP}. decide() issues 32 lowercase hex characters.",
    ),
]
ModelId = Annotated[str, Field(min_length=1, max_length=256, pattern=r"\S")]
RiskLevel = Literal["low", "medium", "high"]
# Spelled out (not built from FAILURE_CATEGORIES) so the OpenAPI enum is static; a test keeps
# the two equal.
FailureCategory = Literal[
    "timeout",
    "context_exceeded",
    "tool_error",
    "rate_limited",
    "validation_failed",
    "hallucination_detected",
    "user_unsatisfied",
    "empty_response",
    "malformed_output",
    "auth_error",
    "provider_error",
    "healed",
    "unknown",
]
OptimizeFor = Literal["cost", "quality", "latency", "balanced"]
Trend = Literal["improving", "stable", "degrading"]
WindowHours = Annotated[
    float, Field(gt=0, le=24 * 3650, description="Time window in hours (at most 10 years).")
]
Text = Annotated[str, Field(max_length=4096)]
Count = Annotated[int, Field(ge=0, le=_MAX_INT)]
NonNegative = Annotated[float, Field(ge=0)]
Rate = Annotated[float, Field(ge=0, le=1)]


class _Request(BaseModel):
    """Base of request bodies: unknown fields are ignored, NaN and infinity are rejected."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- errors -----------------------------------------------------------------------------------
class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str | None = Field(description="Dotted location of the field, e.g. 'constraints.x'.")
    message: str


class ErrorDetail(BaseModel):
    """What went wrong, in words a person can act on."""

    type: str = Field(
        description="Machine-readable kind: validation_error, unauthorized, not_found, "
        "no_path_available, method_not_allowed, payload_too_large, store_unavailable, "
        "internal_error, http_error."
    )
    message: str
    field: str | None = Field(default=None, description="The offending field, when there is one.")
    errors: list[FieldError] | None = Field(
        default=None, description="Every invalid field (validation errors only)."
    )


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


# -- decide -----------------------------------------------------------------------------------
class DecideRequest(_Request):
    """``POST /api/v1/routing/decide``."""

    goal: Goal
    task_risk_level: RiskLevel | None = Field(
        default="low", description="low, medium or high; null means low."
    )
    pipeline_id: PipelineId | None = None
    candidate_model_ids: list[ModelId] | None = Field(
        default=None, description="Only choose among paths of these models."
    )
    exploration_rate: Rate | None = Field(
        default=None,
        description="Overrides the goal's exploration rate for this decision only (what a "
        "Router created with exploration_rate= sends); null uses the goal's config.",
    )


class DecideResponse(_Response):
    """A routing decision; pass ``trace_id`` to report-outcome."""

    trace_id: str = Field(description="32 lowercase hex characters.")
    path_id: str
    model_id: str
    tool_id: str | None
    params: dict[str, Any]
    goal: str
    pipeline_id: str | None
    reason: Literal["optimal", "cost_optimized", "exploration", "fallback"]
    confidence: float
    exploration: bool
    success_rate: float = Field(description="Posterior mean success rate of the chosen path.")
    sample_count: int


# -- outcomes ---------------------------------------------------------------------------------
class ReportOutcomeRequest(_Request):
    """``POST /api/v1/intelligence/report-outcome``."""

    trace_id: TraceId = Field(description="From decide(); trace ids never issued are accepted.")
    goal: Goal
    success: bool
    score: float | None = Field(default=None, description="Quality 0-1 (clamped to [0, 1]).")
    failure_reason: Text | None = None
    failure_category: FailureCategory | None = None
    model_id: Text | None = Field(
        default=None, description="Model used; if omitted, looked up from the trace."
    )
    tool_id: Annotated[str, Field(max_length=512)] | None = None
    execution_params: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    cost_usd: NonNegative | None = None
    latency_ms: NonNegative | None = None
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    pipeline_id: PipelineId | None = None
    outcome_id: TraceId | None = Field(
        default=None,
        description="Idempotency key: a replay with the same key is acknowledged, counted once.",
    )


class ReportOutcomeResponse(_Response):
    """The outcome is durable."""

    status: Literal["accepted"]
    trace_id: str
    goal: str
    path_id: str | None = Field(
        description="The path the outcome was attributed to; null when it matches none."
    )


class UpdateOutcomeRequest(_Request):
    """``POST /api/v1/intelligence/update-outcome``: null (or absent) keeps the stored value."""

    trace_id: TraceId
    goal: Goal
    success: bool | None = None
    score: float | None = None
    failure_reason: Text | None = None
    failure_category: FailureCategory | None = None
    metadata: dict[str, Any] | None = Field(
        default=None, description="Merged into the stored metadata."
    )


class UpdateOutcomeResponse(_Response):
    """What changed."""

    status: Literal["updated", "no_changes"]
    trace_id: str
    goal: str
    fields_updated: list[str]


# -- insights ---------------------------------------------------------------------------------
class FailureMode(_Response):
    """A failure category and its share of the failures."""

    category: str
    count: int
    share: float


class InsightPath(_Response):
    """One path's performance in the window."""

    path_id: str
    model_id: str | None
    tool_id: str | None
    params: dict[str, Any]
    enabled: bool
    success_rate: float | None
    sample_count: int
    avg_score: float | None
    traffic_share: float
    trend: Trend
    demoted: bool
    avg_cost_usd: float | None
    avg_latency_ms: float | None
    p95_latency_ms: float | None
    confidence: float


class ParamValue(_Response):
    """Success of one value of a parameter."""

    value: Any
    success_rate: float
    sample_count: int


class ParamSensitivity(_Response):
    """How much a parameter's value changes success."""

    param: str
    spread: float
    significant: bool
    best_value: Any
    values: list[ParamValue]


class Signal(_Response):
    """A machine-readable actionable signal."""

    type: str = Field(
        description="path_underperforming, failure_mode_dominant, param_sensitivity_detected, "
        "drift_detected, cost_inefficiency, low_confidence or goal_healthy."
    )
    severity: str
    message: str
    data: dict[str, Any]


class GoalInsight(_Response):
    """Diagnostics of one goal."""

    goal: str
    status: Literal["healthy", "degrading", "failing", "insufficient_data"]
    success_rate: float | None
    sample_count: int
    trend: Trend
    trend_delta: float
    confidence: float
    top_failure_modes: list[FailureMode]
    paths: list[InsightPath]
    param_sensitivity: list[ParamSensitivity]
    actionable_signals: list[Signal]


class CrossGoalSummary(_Response):
    """Counts over all goals."""

    total_goals: int
    healthy: int
    degrading: int
    failing: int
    insufficient_data: int
    total_outcomes: int


class InsightsResponse(_Response):
    """``GET /api/v1/intelligence/insights``."""

    schema_version: Literal["1.0"]
    tenant_id: str
    generated_at: str = Field(description="ISO 8601 timestamp (UTC).")
    window_hours: float
    goals: list[GoalInsight]
    cross_goal_summary: CrossGoalSummary


# -- policy and alternatives ------------------------------------------------------------------
class Constraints(BaseModel):
    """Only paths meeting every given constraint are recommended.

    Unknown keys are rejected (a mistyped constraint silently ignored would recommend paths
    that break it).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_cost_usd: NonNegative | None = None
    max_latency_ms: NonNegative | None = None
    min_quality: Rate | None = None


class PolicyRequest(_Request):
    """``POST /api/v1/intelligence/policy``."""

    goal: Goal
    task_type: str | None = Field(default=None, description="Accepted; goals are task types.")
    window_hours: WindowHours | None = Field(
        default=None,
        description="Rank by the outcomes of this window (source 'historical'); null ranks by "
        "the live posteriors the router uses (source 'realtime').",
    )
    include_tools: bool | None = Field(default=True, description="null means true.")
    include_params: list[str] | None = Field(
        default=None, description="Parameter keys to recommend; null means all."
    )
    constraints: Constraints | None = None
    pipeline_id: PipelineId | None = None


class PathAlternative(_Response):
    """Another viable path."""

    path_id: str
    model_id: str
    tool_id: str | None
    params: dict[str, Any]
    success_rate: float | None
    sample_count: int
    avg_cost_usd: float | None
    avg_latency_ms: float | None


class PolicyResponse(_Response):
    """The historically best path (deterministic; no sampling)."""

    goal: str
    source: Literal["realtime", "historical"]
    window_hours: float | None
    constraints: dict[str, float] | None
    recommended_model: str | None = Field(description="null when no path meets the constraints.")
    recommended_provider: str | None
    recommended_path_id: str | None
    recommended_tool: str | None
    recommended_params: dict[str, Any] | None
    outcome_success_rate: float | None
    outcome_sample_count: int
    confidence: float
    risk_score: float
    reasoning: str
    alternatives: list[PathAlternative]


class AlternativeRequest(_Request):
    """``POST /api/v1/intelligence/get-alternative``."""

    goal: Goal
    exclude_models: list[ModelId] = Field(description="Model ids already tried.")
    task_type: str | None = None
    window_hours: WindowHours | None = None
    constraints: Constraints | None = None
    pipeline_id: PipelineId | None = None


class AlternativeResponse(_Response):
    """The next best path."""

    goal: str
    recommended_model: str
    recommended_provider: str
    recommended_path_id: str
    recommended_tool: str | None
    recommended_params: dict[str, Any] | None
    outcome_success_rate: float | None
    outcome_sample_count: int
    confidence: float
    reasoning: str
    remaining_alternatives: int


# -- paths ------------------------------------------------------------------------------------
class RegisterPathRequest(_Request):
    """``POST /api/v1/routing/paths`` (idempotent: the same path gets the same id)."""

    goal: Goal
    model_id: ModelId
    tool_id: Annotated[str, Field(min_length=1, max_length=512)] | list[str] | None = None
    params: dict[str, Any] | None = Field(default=None, description="null means {}.")
    risk_level: RiskLevel | None = Field(default="low", description="null means low.")


class PathResponse(_Response):
    """A registered path."""

    path_id: str
    goal: str
    model_id: str
    tool_id: str | None
    params: dict[str, Any]
    risk_level: RiskLevel
    enabled: bool


class RegisteredPathResponse(PathResponse):
    """A path after registration."""

    created: bool = Field(description="False when the path was already registered.")


class PathListResponse(_Response):
    """Registered paths, in registration order."""

    paths: list[PathResponse]


class PathStatusResponse(_Response):
    """A path was disabled or enabled."""

    status: Literal["disabled", "enabled"]
    path_id: str
    goal: str


# -- stats and config -------------------------------------------------------------------------
class ExplorationConfigBody(_Response):
    """A goal's exploration settings."""

    exploration_rate: float | None = Field(
        description="null: automatic (Thompson sampling's own exploration)."
    )
    min_samples_before_exploit: int
    rollback_threshold: float
    staleness_days: float
    exploration_on_high_risk: bool


class ExplorationConfigResponse(ExplorationConfigBody):
    """The exploration config of a goal."""

    goal: str


class ExplorationConfigRequest(_Request):
    """``POST /api/v1/routing/config``: absent fields keep their value.

    ``exploration_rate: null`` sets the rate back to automatic (its default); null for the
    other fields keeps their value.
    """

    goal: Goal
    exploration_rate: Rate | None = None
    min_samples_before_exploit: Annotated[int, Field(ge=1, le=100_000)] | None = None
    rollback_threshold: Rate | None = None
    staleness_days: Annotated[float, Field(gt=0)] | None = None
    exploration_on_high_risk: bool | None = None


class PathStats(_Response):
    """Live performance of one path."""

    path_id: str
    model_id: str
    tool_id: str | None
    params: dict[str, Any]
    enabled: bool
    risk_level: RiskLevel
    success_rate: float | None = Field(description="Since the path's last detected change.")
    lifetime_success_rate: float | None
    posterior_mean: float
    sample_count: int
    total_outcomes: int
    trend: Trend
    demoted: bool
    rolled_back: bool
    avg_cost_usd: float | None
    avg_latency_ms: float | None
    decisions: int


class StatsResponse(_Response):
    """``GET /api/v1/routing/stats``."""

    goal: str
    pipeline_id: str | None
    total_outcomes: int
    success_rate: float | None
    decisions: int
    config: ExplorationConfigBody
    paths: list[PathStats]


# -- recommend --------------------------------------------------------------------------------
class RecommendRequest(_Request):
    """``POST /api/v1/intelligence/recommend``."""

    goal: Goal
    optimize_for: OptimizeFor | None = Field(
        default="balanced", description="cost, quality, latency or balanced; null: balanced."
    )
    pipeline_id: PipelineId | None = None


class RankedPathResponse(_Response):
    """One enabled path with the measures the ranking uses."""

    rank: int
    path_id: str
    model_id: str
    tool_id: str | None
    params: dict[str, Any]
    success_rate: float | None
    posterior_mean: float = Field(description="Beta(1 + s, 1 + f) mean: the quality measure.")
    sample_count: int
    trend: Trend
    avg_cost_usd: float | None
    avg_latency_ms: float | None
    cost_per_success_usd: float | None = Field(
        description="avg_cost_usd / posterior_mean: expected spend per successful outcome."
    )
    latency_per_success_ms: float | None = Field(
        description="avg_latency_ms / posterior_mean: expected time to a success, retrying."
    )
    balanced_score: float = Field(
        description="posterior_mean + 0.05 * (cost efficiency + latency efficiency) / 2; an "
        "efficiency is the best per-success value of the goal's paths divided by this path's."
    )


class RecommendResponse(_Response):
    """The goal's enabled paths ranked for one objective."""

    goal: str
    optimize_for: OptimizeFor
    recommended_model: str
    recommended_path_id: str
    reasoning: str
    ranking: list[RankedPathResponse]


# -- health -----------------------------------------------------------------------------------
class StoreHealth(_Response):
    """The store's state (no connection details)."""

    status: Literal["healthy", "unhealthy"]
    backend: str | None
    schema_version: int | None = None
    latency_ms: float = Field(description="How long the health probe of the store took.")


class HealthResponse(_Response):
    """``GET /api/v1/intelligence/health``."""

    status: Literal["healthy", "unhealthy"]
    version: str
    store: StoreHealth

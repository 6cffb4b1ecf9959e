"""Rows that cross the store boundary: plain, typed dataclasses (metadata only, no content)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class PathRecord:
    """A registered path of a goal."""

    tenant: str
    goal: str
    path_id: str
    model_id: str
    tool_id: str | None
    params: dict[str, Any]
    risk_level: str
    enabled: bool
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(slots=True)
class DecisionRecord:
    """A routing decision, with the propensity of the chosen path (for offline evaluation)."""

    tenant: str
    trace_id: str
    goal: str
    pipeline_id: str
    path_id: str
    model_id: str
    reason: str
    exploration: bool
    propensity: float | None
    created_at: float


@dataclass(slots=True)
class OutcomeRecord:
    """One reported outcome. ``value`` is what the posterior learned (score, else 0/1).

    ``seq`` is assigned by the store: a global, increasing sequence number that orders the
    outcome log every process folds in the same order. ``prev_seq`` (also set by the store) is
    the seq of the scope's previous outcome: a process whose view of the scope ends exactly
    there can apply this outcome without reading the log. ``outcome_id`` is an optional
    client idempotency key: a second outcome with the same key is not stored again
    (``duplicate`` is then set), so replays after an outage count exactly once.
    """

    tenant: str
    goal: str
    pipeline_id: str
    trace_id: str
    path_id: str | None
    model_id: str | None
    tool_id: str | None
    params: dict[str, Any] | None
    success: bool
    score: float | None
    value: float
    failure_category: str | None
    failure_reason: str | None
    metadata: dict[str, Any] | None
    cost_usd: float | None
    latency_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    created_at: float
    updated_at: float | None = None
    seq: int = 0
    prev_seq: int = 0
    outcome_id: str | None = None
    duplicate: bool = False


@dataclass(slots=True)
class CorrectionRecord:
    """A late correction of an outcome's learned value (from update_outcome)."""

    seq: int
    outcome_seq: int
    tenant: str
    goal: str
    pipeline_id: str
    path_id: str | None
    old_value: float
    new_value: float


@dataclass(slots=True)
class PathTotals:
    """All-time and current-epoch statistics of a path in a scope, as loaded at start-up."""

    path_id: str
    successes: float
    failures: float
    count: int
    eff_successes: float
    eff_failures: float
    eff_count: int
    epoch_seq: int
    cost_sum: float
    cost_n: int
    latency_sum: float
    latency_n: int
    last_outcome_at: float | None
    recent_values: list[float]
    recent_seqs: list[int]


@dataclass(slots=True)
class ApiKeyRecord:
    """An API key of the service (only its hash is stored; the key is shown once)."""

    key_id: str
    tenant: str
    name: str | None
    created_at: float
    revoked_at: float | None = None

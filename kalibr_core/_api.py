"""The functional API: module-level functions over one process-wide Intelligence.

The default instance is created on first use from the environment: ``KALIBR_STORE_URL`` (or
``KALIBR_DB``, a SQLite file path) for the store, ``KALIBR_TENANT_ID`` for the tenant. Call
:func:`configure` to choose explicitly (tests use ``configure(store=":memory:")``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from kalibr_core._domain import FAILURE_CATEGORIES
from kalibr_core._intelligence import DEFAULT_TENANT, Intelligence
from kalibr_core.store import Store


class _Default:
    """Holds the process-wide Intelligence (created lazily, replaced by configure)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.instance: Intelligence | None = None


_default = _Default()


def configure(
    store: Store | str | None = None, *, tenant: str | None = None, **options: Any
) -> Intelligence:
    """Replace the process-wide Intelligence (the previous one is flushed and closed).

    Args:
        store: A store or a store URL/path (see :func:`kalibr_core.store.open_store`).
        tenant: The tenant (default ``$KALIBR_TENANT_ID`` or ``"default"``).
        **options: Passed to :class:`~kalibr_core.Intelligence` (``sync_interval_s``, ``seed``).

    Returns:
        The new default Intelligence.
    """
    fresh = Intelligence(
        store, tenant=tenant or os.environ.get("KALIBR_TENANT_ID") or DEFAULT_TENANT, **options
    )
    with _default.lock:
        previous, _default.instance = _default.instance, fresh
    if previous is not None:
        previous.close()
    return fresh


def get_intelligence() -> Intelligence:
    """The process-wide Intelligence, created from the environment on first use."""
    instance = _default.instance
    if instance is None:
        with _default.lock:
            instance = _default.instance
            if instance is None:
                instance = Intelligence(
                    None, tenant=os.environ.get("KALIBR_TENANT_ID") or DEFAULT_TENANT
                )
                _default.instance = instance
    return instance


def decide(
    goal: str,
    task_risk_level: str = "low",
    candidate_model_ids: Sequence[str] | None = None,
    pipeline_id: str | None = None,
) -> dict[str, Any]:
    """Choose a path for one call of ``goal`` (see :meth:`Intelligence.decide`).

    Example:
        >>> decision = decide(goal="book_meeting")  # doctest: +SKIP
        >>> decision["model_id"], decision["trace_id"]  # doctest: +SKIP
    """
    return get_intelligence().decide(goal, task_risk_level, candidate_model_ids, pipeline_id)


def report_outcome(
    trace_id: str,
    goal: str,
    success: bool | None = None,
    score: float | None = None,
    failure_reason: str | None = None,
    failure_category: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    model_id: str | None = None,
    tool_id: str | None = None,
    execution_params: Mapping[str, Any] | None = None,
    **measurements: Any,
) -> dict[str, Any]:
    """Report what happened for a trace (see :meth:`Intelligence.report_outcome`).

    ``measurements`` may carry ``cost_usd``, ``latency_ms``, ``input_tokens``,
    ``output_tokens`` and ``pipeline_id``.
    """
    return get_intelligence().report_outcome(
        trace_id,
        goal,
        success,
        score,
        failure_reason,
        failure_category,
        metadata,
        model_id,
        tool_id,
        execution_params,
        **measurements,
    )


def update_outcome(
    trace_id: str,
    goal: str,
    success: bool | None = None,
    score: float | None = None,
    failure_reason: str | None = None,
    failure_category: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Correct an outcome with a late signal (see :meth:`Intelligence.update_outcome`)."""
    return get_intelligence().update_outcome(
        trace_id, goal, success, score, failure_reason, failure_category, metadata
    )


def get_policy(
    goal: str,
    constraints: Mapping[str, Any] | None = None,
    window_hours: float | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The best path for a goal, deterministically (see :meth:`Intelligence.get_policy`)."""
    return get_intelligence().get_policy(goal, constraints, window_hours, **options)


def get_alternative(
    goal: str,
    exclude_models: Sequence[str],
    constraints: Mapping[str, Any] | None = None,
    window_hours: float | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The next best path after excluding models (see :meth:`Intelligence.get_alternative`)."""
    return get_intelligence().get_alternative(
        goal, exclude_models, constraints, window_hours, **options
    )


def get_insights(goal: str | None = None, window_hours: float = 168) -> dict[str, Any]:
    """Structured diagnostics per goal (see :meth:`Intelligence.get_insights`)."""
    return get_intelligence().get_insights(goal, window_hours)


def register_path(
    goal: str,
    model_id: str,
    tool_id: str | Sequence[str] | None = None,
    params: Mapping[str, Any] | None = None,
    risk_level: str = "low",
) -> dict[str, Any]:
    """Register a path for a goal, idempotently (see :meth:`Intelligence.register_path`)."""
    return get_intelligence().register_path(goal, model_id, tool_id, params, risk_level)


def list_paths(goal: str | None = None, include_disabled: bool = False) -> dict[str, Any]:
    """The registered paths (see :meth:`Intelligence.list_paths`)."""
    return get_intelligence().list_paths(goal, include_disabled)


def disable_path(path_id: str) -> dict[str, Any]:
    """Soft-delete a path (see :meth:`Intelligence.disable_path`)."""
    return get_intelligence().disable_path(path_id)


def enable_path(path_id: str) -> dict[str, Any]:
    """Re-enable a disabled path (see :meth:`Intelligence.enable_path`)."""
    return get_intelligence().enable_path(path_id)


def get_stats(goal: str, pipeline_id: str | None = None) -> dict[str, Any]:
    """Routing statistics of a goal (see :meth:`Intelligence.stats`)."""
    return get_intelligence().stats(goal, pipeline_id=pipeline_id)


def get_exploration_config(goal: str) -> dict[str, Any]:
    """A goal's exploration config (see :meth:`Intelligence.get_exploration_config`)."""
    return get_intelligence().get_exploration_config(goal)


def set_exploration_config(goal: str, **fields: Any) -> dict[str, Any]:
    """Change a goal's exploration config (see :meth:`Intelligence.set_exploration_config`)."""
    return get_intelligence().set_exploration_config(goal, **fields)


def flush() -> None:
    """Write buffered decisions of the default Intelligence now."""
    if _default.instance is not None:
        _default.instance.flush()


__all__ = [
    "FAILURE_CATEGORIES",
    "configure",
    "decide",
    "disable_path",
    "enable_path",
    "flush",
    "get_alternative",
    "get_exploration_config",
    "get_insights",
    "get_intelligence",
    "get_policy",
    "get_stats",
    "list_paths",
    "register_path",
    "report_outcome",
    "set_exploration_config",
    "update_outcome",
]

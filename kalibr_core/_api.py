"""The functional API: module-level functions over one process-wide Intelligence.

The default instance is created on first use from the environment. With
``KALIBR_INTELLIGENCE_URL`` set it is a :class:`~kalibr_core.RemoteIntelligence` of that
service (``KALIBR_API_KEY`` required, ``KALIBR_TENANT_ID`` default ``"default"``; see
docs/remote.md); otherwise a local :class:`Intelligence` over ``KALIBR_STORE_URL`` (or
``KALIBR_DB``, a SQLite file path) for tenant ``KALIBR_TENANT_ID``. Call :func:`configure` to
choose explicitly (tests use ``configure(store=":memory:")``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from kalibr_core._domain import FAILURE_CATEGORIES
from kalibr_core._errors import ConfigurationError
from kalibr_core._intelligence import DEFAULT_TENANT, Intelligence
from kalibr_core._remote import RemoteIntelligence
from kalibr_core.store import Store

IntelligenceBackend: TypeAlias = Intelligence | RemoteIntelligence
"""What the functional API and the Router decide with: local, or the remote service."""


class _Default:
    """Holds the process-wide Intelligence (created lazily, replaced by configure)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.instance: IntelligenceBackend | None = None


_default = _Default()


def configure(
    store: Store | str | None = None,
    *,
    tenant: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
    **options: Any,
) -> IntelligenceBackend:
    """Replace the process-wide Intelligence (the previous one is flushed and closed).

    Args:
        store: A store or a store URL/path (see :func:`kalibr_core.store.open_store`): local
            mode.
        tenant: The tenant (default ``$KALIBR_TENANT_ID`` or ``"default"``).
        url: The intelligence service's URL: remote mode (see docs/remote.md). Without
            ``store`` or ``url``, ``$KALIBR_INTELLIGENCE_URL`` selects remote mode.
        api_key: The API key in remote mode (default ``$KALIBR_API_KEY``).
        **options: Passed to :class:`~kalibr_core.Intelligence` (``sync_interval_s``,
            ``seed``) or to :class:`~kalibr_core.RemoteIntelligence` (``budget``,
            ``outbox``, ``seed``).

    Returns:
        The new default Intelligence.

    Raises:
        ConfigurationError: both ``store`` and ``url``, or remote mode without an API key.
    """
    if store is not None and url is not None:
        raise ConfigurationError("give a store (local mode) or a url (remote mode), not both")
    if url is None and store is None:
        url = os.environ.get("KALIBR_INTELLIGENCE_URL") or None
    fresh: IntelligenceBackend
    if url is not None:
        fresh = _remote(url, api_key, tenant, options)
    else:
        if api_key is not None:
            raise ConfigurationError("api_key is for remote mode: give url= too")
        fresh = Intelligence(store, tenant=tenant or _env_tenant(), **options)
    with _default.lock:
        previous, _default.instance = _default.instance, fresh
    if previous is not None:
        previous.close()
    return fresh


def _env_tenant() -> str:
    return os.environ.get("KALIBR_TENANT_ID") or DEFAULT_TENANT


def _remote(
    url: str, api_key: str | None, tenant: str | None, options: dict[str, Any]
) -> RemoteIntelligence:
    key = api_key if api_key is not None else os.environ.get("KALIBR_API_KEY")
    if not key:
        raise ConfigurationError(
            f"KALIBR_API_KEY is not set: the intelligence service at {url} needs an API key "
            "(create one with `kalibr-core keys create --tenant TENANT`)"
        )
    return RemoteIntelligence(url, key, tenant or _env_tenant(), **options)


def get_intelligence() -> IntelligenceBackend:
    """The process-wide Intelligence, created from the environment on first use.

    Remote (a :class:`~kalibr_core.RemoteIntelligence`) when
    ``KALIBR_INTELLIGENCE_URL`` is set, local otherwise.

    Raises:
        ConfigurationError: ``KALIBR_INTELLIGENCE_URL`` is set but ``KALIBR_API_KEY`` is not.
    """
    instance = _default.instance
    if instance is None:
        with _default.lock:
            instance = _default.instance
            if instance is None:
                url = os.environ.get("KALIBR_INTELLIGENCE_URL")
                if url:
                    instance = _remote(url, None, None, {})
                else:
                    instance = Intelligence(None, tenant=_env_tenant())
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
    """Store (local) or deliver (remote) what the default Intelligence has queued, now.

    Raises:
        StoreError: local mode, the store cannot take them (they stay queued).
        IntelligenceUnavailableError: remote mode, outcomes are still in the outbox after
            ``budget.flush`` seconds (they are replayed when the service answers).
    """
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

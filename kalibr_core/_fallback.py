"""Fail-open decisions of the remote client: the last snapshot of a goal's posteriors.

When the intelligence service does not answer in time, :class:`~kalibr_core.RemoteIntelligence`
decides locally. The spec falls back to the first path; we do better when we can: the client
keeps the last routing statistics it saw per (goal, pipeline) (``GET /routing/stats``,
refreshed in the background at most every ``snapshot_max_age_s`` while decisions succeed, and
kept in the outbox file so a process started during an outage has them too) and Thompson-samples
over them with the same engine the service runs. Outcomes reported meanwhile are folded into
the local copy, so routing keeps learning through an outage (a path that starts failing is left,
as it would be by the service). Without any snapshot the first registered path is used, as the
spec says. The next snapshot replaces the local copy: the service's view, which by then
includes the replayed outcomes, wins.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kalibr_core._domain import DEFAULT_PIPELINE, PathSpec, new_trace_id
from kalibr_core._errors import NoPathAvailableError, ValidationError
from kalibr_core._outbox import Outbox
from kalibr_core.engine import EngineTuning, ExplorationConfig, GoalRouter, PathInfo

logger = logging.getLogger("kalibr_core.remote")


@dataclass(slots=True)
class _Scope:
    rng: np.random.Generator
    router: GoalRouter | None = None
    taken_at: float | None = None  # Unix time of the snapshot
    fetched_at: float | None = None  # monotonic time it was fetched by this process
    requested_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _router_from_stats(
    stats: Mapping[str, Any], tuning: EngineTuning, known: Sequence[PathSpec]
) -> GoalRouter:
    """A GoalRouter with the posteriors of a ``/routing/stats`` answer (malformed rows skipped)."""
    raw_config = stats.get("config")
    try:
        config = (
            ExplorationConfig.from_dict(dict(raw_config))
            if isinstance(raw_config, Mapping)
            else ExplorationConfig()
        )
    except (ValidationError, TypeError):
        config = ExplorationConfig()
    router = GoalRouter(config, tuning)
    rows = stats.get("paths")
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, Mapping):
            continue
        path_id, model_id = row.get("path_id"), row.get("model_id")
        if not isinstance(path_id, str) or not isinstance(model_id, str):
            continue
        tool_id = row.get("tool_id")
        params = row.get("params")
        risk = row.get("risk_level")
        info = PathInfo(
            path_id=path_id,
            model_id=model_id,
            tool_id=tool_id if isinstance(tool_id, str) else None,
            params=dict(params) if isinstance(params, Mapping) else {},
            risk_level=risk if risk in ("low", "medium", "high") else "low",
            enabled=row.get("enabled") is not False,
            cost_hint=_number(row.get("avg_cost_usd")),
            latency_hint=_number(row.get("avg_latency_ms")),
        )
        state = router.add_path(info)
        count = row.get("sample_count")
        rate = _number(row.get("success_rate"))
        if isinstance(count, int) and count > 0 and rate is not None and 0.0 <= rate <= 1.0:
            state.eff_count = state.count = count
            state.eff_successes = state.successes = rate * count
            state.eff_failures = state.failures = count - rate * count
        if row.get("demoted") is True:
            state.demote(0)
    for spec in known:
        if spec.path_id not in router.paths:
            router.add_path(_info(spec))
    return router


def _info(spec: PathSpec) -> PathInfo:
    return PathInfo(
        path_id=spec.path_id,
        model_id=spec.model_id,
        tool_id=spec.tool_id,
        params=dict(spec.params),
        risk_level=spec.risk_level,
    )


class FallbackRouter:
    """Local decisions for the goals of one remote client (see the module docstring).

    Thread-safe. Pure bookkeeping over the engine, plus the outbox file for persistence.
    """

    def __init__(
        self, outbox: Outbox, *, tuning: EngineTuning | None = None, seed: int | None = None
    ) -> None:
        self._outbox = outbox
        self._tuning = tuning or EngineTuning()
        self._seeds = np.random.SeedSequence(seed)
        self._lock = threading.Lock()
        self._scopes: dict[tuple[str, str], _Scope] = {}
        self._known: dict[str, dict[str, PathSpec]] = {}

    def remember(self, spec: PathSpec) -> None:
        """A path registered through this client (in order: the first is the fallback)."""
        with self._lock:
            self._known.setdefault(spec.goal, {}).setdefault(spec.path_id, spec)

    def known(self, goal: str) -> list[PathSpec]:
        """The paths of a goal registered through this client, in registration order."""
        with self._lock:
            return list(self._known.get(goal, {}).values())

    def _scope(self, goal: str, pipeline_id: str) -> _Scope:
        key = (goal, pipeline_id)
        scope = self._scopes.get(key)
        if scope is not None:
            return scope
        with self._lock:
            scope = self._scopes.get(key)
            if scope is None:
                scope = _Scope(np.random.default_rng(self._seeds.spawn(1)[0]))
                self._scopes[key] = scope
                load = True
            else:
                load = False
        if load:
            try:
                saved = self._outbox.load_snapshot(goal, pipeline_id)
            except Exception:  # a damaged snapshot must not stop a decision
                logger.exception("reading the saved snapshot of %s failed", goal)
                saved = None
            if saved is not None:
                with scope.lock:
                    if scope.router is None:
                        scope.taken_at = saved[0]
                        scope.router = _router_from_stats(saved[1], self._tuning, self.known(goal))
        return scope

    # -- snapshots -----------------------------------------------------------------------------
    def wants_refresh(self, goal: str, pipeline_id: str, max_age_s: float) -> bool:
        """Whether this scope's snapshot should be fetched again (marks it as requested)."""
        scope = self._scope(goal, pipeline_id)
        now = time.monotonic()
        if scope.fetched_at is not None and now - scope.fetched_at < max_age_s:
            return False
        if scope.requested_at is not None and now - scope.requested_at < min(max_age_s, 5.0):
            return False
        scope.requested_at = now
        return True

    def update(self, goal: str, pipeline_id: str, stats: Mapping[str, Any]) -> None:
        """Replace a scope's snapshot with fresh ``/routing/stats`` (and save it)."""
        now = time.time()
        router = _router_from_stats(stats, self._tuning, self.known(goal))
        scope = self._scope(goal, pipeline_id)
        with scope.lock:
            scope.router = router
            scope.taken_at = now
            scope.fetched_at = time.monotonic()
        self._outbox.save_snapshot(goal, pipeline_id, now, dict(stats))

    def observe(
        self,
        goal: str,
        pipeline_id: str,
        path_id: str,
        value: float,
        cost_usd: float | None,
        latency_ms: float | None,
    ) -> None:
        """Fold an outcome into the local copy (until the next snapshot replaces it)."""
        scope = self._scopes.get((goal, pipeline_id))
        if scope is None:
            return
        with scope.lock:
            router = scope.router
            if router is not None and path_id in router.paths:
                router.observe(
                    path_id, value, cost_usd=cost_usd, latency_ms=latency_ms, now=time.time()
                )

    # -- deciding ------------------------------------------------------------------------------
    def decide(
        self,
        goal: str,
        pipeline_id: str,
        task_risk_level: str,
        candidate_model_ids: Sequence[str] | None,
        exploration_rate: float | None,
    ) -> dict[str, Any] | None:
        """A decision from the snapshot, else the first known path; None if nothing is known.

        The decision has the service's fields plus ``source: "fail_open"``, ``fallback``
        (``"snapshot"`` or ``"first_path"``) and ``snapshot_age_s``; its ``reason`` is
        ``"fallback"`` and its ``trace_id`` is minted here (32 hex).
        """
        scope = self._scope(goal, pipeline_id)
        known = self.known(goal)
        with scope.lock:
            router = scope.router
            if router is not None:
                for spec in known:
                    if spec.path_id not in router.paths:
                        router.add_path(_info(spec))
                try:
                    selection = router.select(
                        scope.rng,
                        task_risk_level=task_risk_level,
                        candidate_model_ids=candidate_model_ids,
                        now=time.time(),
                        exploration_rate=exploration_rate,
                    )
                except NoPathAvailableError:
                    selection = None
                if selection is not None:
                    info = router.paths[selection.path_id].info
                    age = None if scope.taken_at is None else time.time() - scope.taken_at
                    return _decision(
                        goal,
                        pipeline_id,
                        info.path_id,
                        info.model_id,
                        info.tool_id,
                        info.params,
                        basis="snapshot",
                        confidence=selection.confidence,
                        exploration=selection.exploration,
                        success_rate=selection.success_rate,
                        sample_count=selection.sample_count,
                        snapshot_age_s=None if age is None else round(age, 3),
                    )
        wanted = None if candidate_model_ids is None else set(candidate_model_ids)
        for spec in known:
            if wanted is None or spec.model_id in wanted:
                return _decision(
                    goal,
                    pipeline_id,
                    spec.path_id,
                    spec.model_id,
                    spec.tool_id,
                    spec.params,
                    basis="first_path",
                    confidence=0.0,
                    exploration=False,
                    success_rate=None,
                    sample_count=0,
                    snapshot_age_s=None,
                )
        return None


def _decision(
    goal: str,
    pipeline_id: str,
    path_id: str,
    model_id: str,
    tool_id: str | None,
    params: Mapping[str, Any],
    *,
    basis: str,
    confidence: float,
    exploration: bool,
    success_rate: float | None,
    sample_count: int,
    snapshot_age_s: float | None,
) -> dict[str, Any]:
    return {
        "trace_id": new_trace_id(),
        "path_id": path_id,
        "model_id": model_id,
        "tool_id": tool_id,
        "params": dict(params),
        "goal": goal,
        "pipeline_id": pipeline_id if pipeline_id != DEFAULT_PIPELINE else None,
        "reason": "fallback",
        "confidence": confidence,
        "exploration": exploration,
        "success_rate": success_rate,
        "sample_count": sample_count,
        "source": "fail_open",
        "fallback": basis,
        "snapshot_age_s": snapshot_age_s,
    }

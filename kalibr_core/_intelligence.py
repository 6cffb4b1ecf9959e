"""Intelligence: the engine and a store put together (what the functional API and service call).

One ``Intelligence`` serves any number of tenants, goals and pipelines. Each scope
(tenant, goal, pipeline) has an in-memory :class:`~kalibr_core.engine.GoalRouter` built from the
store, so ``decide`` never reads the outcome table: its cost does not grow with the number of
stored outcomes.

Consistency between processes (and hosts, with a shared database): the store orders every
outcome and correction with a sequence number, and each scope folds that log in order. Outcomes
reported through this process are applied at once; those reported by other processes are
picked up by ``decide`` once the scope's last sync is older than ``sync_interval_s`` (default
0.5 s): that is the bounded staleness of a decision. Because every process folds the same log
in the same order, all reach the same posteriors and the same change detections.

Decisions are buffered and written by a background thread (every ``flush_interval_s`` and at
exit, or on ``flush()``), where each decision's propensity is estimated off the hot path.
``report_outcome`` returns once the outcome is durable; with ``wait=False`` (what the Router
uses) it is queued instead, and the same thread stores the queue in one commit at most
``outcome_delay_s`` (default 20 ms) after the first queued outcome, and at exit or ``flush()``.
``areport_outcome`` (what the service calls) is durable when it returns too: the calls of all
tasks that arrive while a commit is under way share the next one, written by one reporter
thread, so the event loop makes no thread-pool round trip per outcome.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import logging
import math
import os
import queue
import random
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from kalibr_core._domain import (
    DEFAULT_PIPELINE,
    PathSpec,
    new_trace_id,
    normalise_path,
    validate_count,
    validate_failure_category,
    validate_goal,
    validate_mapping,
    validate_nonnegative,
    validate_pipeline_id,
    validate_risk_level,
    validate_score,
    validate_trace_id,
)
from kalibr_core._errors import NoPathAvailableError, NotFoundError, ValidationError
from kalibr_core.engine import (
    Change,
    EngineTuning,
    ExplorationConfig,
    GoalRouter,
    PathInfo,
    PathState,
    RankedPath,
    Selection,
)
from kalibr_core.engine._insights import PathView, cross_goal_summary, goal_insight
from kalibr_core.engine._router import PropensityInputs, snapshot_shares
from kalibr_core.engine._timeline import DEFAULT_ROLLING, MAX_BUCKETS, Bucket
from kalibr_core.engine._timeline import timeline as bucket_timeline
from kalibr_core.store import (
    CorrectionRecord,
    DecisionRecord,
    OutcomeRecord,
    PathRecord,
    PathTotals,
    Store,
    open_store,
)

logger = logging.getLogger("kalibr_core")

DEFAULT_TENANT = "default"
_RECENT_DECISIONS = 100_000
# How long the background writer keeps waking on its own after the last queued outcome before
# it sleeps until woken: a second of idle wake-ups (cheap) spares a busy caller a wake-up call
# per outcome when calls are tens of milliseconds apart.
_WRITER_LINGER_S = 1.0
_UPDATABLE = ("success", "score", "failure_reason", "failure_category", "metadata")


@dataclass(slots=True)
class _Scope:
    tenant: str
    goal: str
    pipeline_id: str
    router: GoalRouter
    rng: random.Random  # the decisions' draws (see GoalRouter.select)
    outcome_cursor: int = 0
    correction_cursor: int = 0
    last_sync: float = 0.0
    lock: threading.RLock = field(default_factory=threading.RLock)
    pending: list[OutcomeRecord] = field(default_factory=list)


_AheadRequest = tuple[str, list[str] | None, float | None]  # risk, candidates, rate


class _Issued(NamedTuple):  # one per decision: a tuple is cheaper to build than a dataclass
    goal: str
    pipeline_id: str
    path_id: str
    model_id: str


@dataclass(slots=True)
class _Report:
    """One ``areport_outcome`` call waiting for the reporter thread."""

    build: Callable[[], OutcomeRecord]  # validates and attributes (may read the store)
    future: asyncio.Future[dict[str, Any]]
    loop: asyncio.AbstractEventLoop
    record: OutcomeRecord | None = None
    error: BaseException | None = None
    abandoned: bool = False  # the caller was cancelled (a client gone) before its answer


@dataclass(slots=True)
class _Deferred:
    """A ``queue_outcome`` call: its record is built (checked, attributed) by the writer."""

    build: Callable[[], OutcomeRecord]
    queued_at: float


def _path_info(record: PathRecord) -> PathInfo:
    pricing = record.extra.get("pricing") if isinstance(record.extra, dict) else None
    cost_hint = pricing.get("cost_per_call") if isinstance(pricing, dict) else None
    return PathInfo(
        path_id=record.path_id,
        model_id=record.model_id,
        tool_id=record.tool_id,
        params=dict(record.params),
        risk_level=record.risk_level,
        enabled=record.enabled,
        cost_hint=cost_hint if isinstance(cost_hint, int | float) else None,
    )


def _constraint_args(constraints: Mapping[str, Any] | None) -> dict[str, float | None]:
    allowed = ("max_cost_usd", "max_latency_ms", "min_quality")
    data = validate_mapping(constraints, "constraints") or {}
    unknown = set(data) - set(allowed)
    if unknown:
        raise ValidationError(
            f"unknown constraints {sorted(unknown)}; accepted: {list(allowed)}",
            field="constraints",
        )
    result: dict[str, float | None] = {}
    for key in allowed:
        result[key] = validate_nonnegative(data.get(key), key)
    quality = result["min_quality"]
    if quality is not None and quality > 1:
        raise ValidationError("min_quality must be between 0 and 1", field="min_quality")
    return result


class Intelligence:
    """Routing intelligence over a store: decide, learn from outcomes, explain.

    Thread-safe. Methods return plain dicts with the spec's field names.

    Args:
        store: A store, or a store URL / path for :func:`~kalibr_core.store.open_store`;
            None opens ``$KALIBR_STORE_URL`` or the default SQLite file.
        tenant: The tenant used when a method is not given one.
        sync_interval_s: Bounded staleness: how old a scope's view of outcomes reported by
            other processes may get before ``decide`` reads them.
        flush_interval_s: How often buffered decisions are written.
        outcome_delay_s: How long an outcome queued by ``report_outcome(wait=False)`` may wait
            before the background writer stores it (with the others queued meanwhile, in one
            commit): the bound on the time a Router outcome is not yet durable, and on how
            late this process's own decisions learn from it.
        seed: Seed of the sampling generators. The same calls in the same order draw the
            same decisions, except where the background writer takes part at times of the
            machine's choosing: a decision it draws ahead and is then dropped has used random
            numbers, and outcomes queued by Routers are folded when it stores them. Tests
            that need one exact sequence report with ``report_outcome()`` (folded at the
            next decision) and must not depend on a particular draw otherwise.
        tuning: Engine tuning (defaults are what the benchmarks measure).

    Example:
        >>> intel = Intelligence(":memory:")
        >>> _ = intel.register_path("extract_company", "gpt-4o")
        >>> decision = intel.decide("extract_company")
        >>> intel.report_outcome(decision["trace_id"], "extract_company", success=True)["status"]
        'accepted'
        >>> intel.close()
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        *,
        tenant: str = DEFAULT_TENANT,
        sync_interval_s: float = 0.5,
        flush_interval_s: float = 0.2,
        outcome_delay_s: float = 0.02,
        seed: int | None = None,
        tuning: EngineTuning | None = None,
    ) -> None:
        if store is None or isinstance(store, str | os.PathLike):
            self.store: Store = open_store(store)
            self._owns_store = True
        else:
            self.store = store
            self._owns_store = False
        self.tenant = validate_goal(tenant, field_name="tenant")
        self.sync_interval_s = sync_interval_s
        self.flush_interval_s = flush_interval_s
        self.outcome_delay_s = outcome_delay_s
        self._tuning = tuning or EngineTuning()
        self._seeds = np.random.SeedSequence(seed)
        self._scopes: dict[tuple[str, str, str], _Scope] = {}
        self._scopes_lock = threading.Lock()
        self._pending: list[tuple[DecisionRecord, Selection]] = []
        # Scopes to draw a decision ahead for, with the arguments of their latest decision.
        self._wanting: dict[int, tuple[_Scope, _AheadRequest]] = {}
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._issued: OrderedDict[tuple[str, str], _Issued] = OrderedDict()
        self._flush_rng = np.random.default_rng(self._seeds.spawn(1)[0])
        self._flusher: threading.Thread | None = None
        self._outbox: list[OutcomeRecord | _Deferred] = []
        self._outbox_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._writer_asleep = False  # waiting for _wake (guarded by _outbox_lock)
        self._stop = threading.Event()
        self._closed = False
        self._reports: queue.SimpleQueue[_Report | None] = queue.SimpleQueue()
        self._reporter: threading.Thread | None = None
        self._reporter_lock = threading.Lock()
        self._reports_closed = False  # close() began: report in the caller's thread
        self._path_cache: dict[tuple[str, str], tuple[float, list[PathRecord]]] = {}
        _live.add(self)

    # -- lifecycle -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write queued outcomes (``report_outcome(wait=False)``) and buffered decisions now.

        Raises:
            StoreError: the store cannot take them; they stay queued and are retried.
        """
        self._drain_outbox()
        # One flush at a time: a flush returning while the background flusher still writes
        # the batch it took would leave decisions unwritten after flush() (and the propensity
        # generator is not thread-safe).
        with self._flush_lock:
            with self._pending_lock:
                pending, self._pending = self._pending, []
            if not pending:
                return
            for (record, _), propensity in zip(
                pending,
                estimate_propensities([sel for _, sel in pending], self._flush_rng),
                strict=True,
            ):
                record.propensity = propensity
            try:
                self.store.record_decisions(record for record, _ in pending)
            except Exception:
                with self._pending_lock:
                    self._pending = pending + self._pending
                raise

    def _drain_outbox(self) -> None:
        with self._write_lock:
            with self._outbox_lock:
                batch, self._outbox = self._outbox, []
            if not batch:
                return
            records: list[OutcomeRecord] = []
            for position, item in enumerate(batch):
                if isinstance(item, OutcomeRecord):
                    records.append(item)
                    continue
                try:
                    record = item.build()
                except ValidationError:  # the caller is gone: say it loudly, with the reason
                    logger.exception("an outcome queued by queue_outcome() is invalid: not stored")
                    continue
                except Exception:  # the store could not attribute it: keep it all, retry
                    with self._outbox_lock:
                        self._outbox = [*records, *batch[position:], *self._outbox]
                    raise
                record.created_at = item.queued_at
                records.append(record)
            if not records:
                return
            try:
                self.store.record_outcomes(records)
            except Exception:
                with self._outbox_lock:
                    self._outbox = [*records, *self._outbox]
                raise
            # Folded here (the writer thread, off the decision path) rather than in the next
            # decide(), which would run the engine's observation of each of them between the
            # caller and its provider call.
            self._fold_stored(records)

    def pending_outcomes(self) -> int:
        """Outcomes queued by ``report_outcome(wait=False)`` and not yet stored."""
        with self._outbox_lock:
            return len(self._outbox)

    def close(self) -> None:
        """Flush and release the store (if this object opened it). Idempotent."""
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
        with self._reporter_lock:
            self._reports_closed = True
            reporter, self._reporter = self._reporter, None
            if reporter is not None:
                self._reports.put(None)  # after the calls already queued: they are written
        if reporter is not None:
            reporter.join()
        self.flush()
        self._closed = True
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Intelligence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_flusher(self) -> None:
        if self._flusher is None:
            with self._pending_lock:
                if self._flusher is None:
                    thread = threading.Thread(
                        target=self._flush_loop, name="kalibr-writer", daemon=True
                    )
                    self._flusher = thread
                    thread.start()

    def _flush_loop(self) -> None:
        """Background writer: queued outcomes in batches, buffered decisions periodically.

        While outcomes keep coming, the writer wakes on its own every ``outcome_delay_s`` and
        stores what was queued meanwhile in one commit. Once none came for
        ``_WRITER_LINGER_S`` it sleeps until the next decision flush, or until an outcome wakes
        it; that outcome then waits ``outcome_delay_s`` for others to join it. Waking the
        writer for each outcome (as this once did) made it take the interpreter lock during or
        right after every routed call, and the wake-up itself (a system call) cost the caller
        tens of microseconds.
        """
        next_flush = time.monotonic() + self.flush_interval_s
        last_outcome = retry_at = -math.inf
        while not self._stop.is_set():
            now = time.monotonic()
            with self._outbox_lock:
                polling = bool(self._outbox) or now - last_outcome < _WRITER_LINGER_S
                if not polling:
                    # Both under the lock: an outcome queued from now on sees the flag and
                    # wakes the writer, and no earlier wake-up is left to cut its delay short.
                    self._wake.clear()
                    self._writer_asleep = True
            if polling:
                stopped = self._stop.wait(self.outcome_delay_s)
            elif self._wake.wait(max(0.0, next_flush - now)):
                stopped = self._stop.wait(self.outcome_delay_s)  # let the batch collect
            else:
                with self._outbox_lock:
                    self._writer_asleep = False  # up for the decisions anyway
                stopped = False
            if stopped:
                return  # close() stores what is queued
            now = time.monotonic()
            if now >= retry_at and self.pending_outcomes():
                last_outcome = now
                if not self._write_queued(self._drain_outbox):
                    retry_at = now + self.flush_interval_s  # a failing store: retry less often
            if self._wanting:
                self._draw_ahead()
            if now >= next_flush:
                self._write_queued(self.flush)
                next_flush = time.monotonic() + self.flush_interval_s

    def _draw_ahead(self) -> None:
        """Draw the next decision of each scope decided on since the last pass (a writer).

        The writer wakes while callers wait on their providers (every ``outcome_delay_s``
        while outcomes come, else at the decision flush), and the reporter thread of
        ``areport_outcome`` runs this when no report is waiting: each folds what it stored,
        then draws each such scope's next decision (:meth:`GoalRouter.draw_ahead`), which the
        next ``decide`` with the same arguments takes if nothing changed meanwhile. That
        moves the draw, the slowest part of a decision made right after a network wait,
        off the caller's path; a decision taken this way is the one the caller would have
        drawn. A scope is drawn for once per decision on it; a racing decision can be
        missed here, and is then drawn by its caller as usual.
        """
        wanting, self._wanting = self._wanting, {}
        now = time.time()
        for scope, (risk, candidates, exploration_rate) in wanting.values():
            try:
                with scope.lock:
                    if time.monotonic() - scope.last_sync > self.sync_interval_s:
                        continue  # the next decide reads the store first: no draw before it
                    if scope.pending:
                        self._drain(scope)
                    scope.router.draw_ahead(
                        scope.rng,
                        task_risk_level=risk,
                        candidate_model_ids=candidates,
                        now=now,
                        exploration_rate=exploration_rate,
                    )
            except Exception:  # the caller draws its decision itself
                logger.exception("drawing the next decision of %s ahead failed", scope.goal)

    def _write_queued(self, write: Callable[[], None]) -> bool:
        """Run a background write; False (and logged) if it failed."""
        try:
            write()
        except Exception:  # keep running: what failed stays queued and is retried
            logger.exception(
                "writing %d queued outcome(s) and buffered decisions failed; will retry",
                self.pending_outcomes(),
            )
            return False
        return True

    def _tenant(self, tenant: str | None) -> str:
        return self.tenant if tenant is None else validate_goal(tenant, field_name="tenant")

    # -- scopes --------------------------------------------------------------------------------
    def _scope(self, tenant: str, goal: str, pipeline_id: str) -> _Scope:
        key = (tenant, goal, pipeline_id)
        scope = self._scopes.get(key)
        if scope is not None:
            return scope
        with self._scopes_lock:
            scope = self._scopes.get(key)
            if scope is None:
                scope = self._load_scope(tenant, goal, pipeline_id)
                # A goal with no path is answered from a scope that is not kept: anyone can
                # name any goal (a service's decide or stats), and each would stay for good.
                if scope.router.paths:
                    self._scopes[key] = scope
        return scope

    def _load_scope(self, tenant: str, goal: str, pipeline_id: str) -> _Scope:
        stored = self.store.get_config(tenant, goal)
        config = ExplorationConfig.from_dict(stored) if stored else ExplorationConfig()
        router = GoalRouter(config, self._tuning)
        for record in self.store.list_paths(tenant, goal, include_disabled=True):
            router.add_path(_path_info(record))
        totals, outcome_cursor, correction_cursor = self.store.load_scope(
            tenant, goal, pipeline_id, self._tuning.detector_history
        )
        for total in totals:
            state = router.paths.get(total.path_id)
            if state is not None:
                _restore(state, total)
        # A rollback is derived from the statistics, not stored: derive it again after a
        # restart, or a failing path would be back in exploitation (and never probed).
        for state in router.paths.values():
            router._check_rollback(state)
        # A detected change is stored as the path's epoch: re-derive it, or a degraded path
        # would be back in exploitation (and no longer 'degrading') after a restart.
        router.restore_changes()
        # Seeded from the Intelligence's seed: reproducible decisions when one is given.
        rng = random.Random(int(self._seeds.spawn(1)[0].generate_state(2, np.uint64)[0]))
        return _Scope(
            tenant,
            goal,
            pipeline_id,
            router,
            rng,
            outcome_cursor,
            correction_cursor,
            time.monotonic(),
        )

    def _loaded_scopes(self, tenant: str, goal: str) -> list[_Scope]:
        with self._scopes_lock:
            return [s for (t, g, _), s in self._scopes.items() if t == tenant and g == goal]

    def _sync(self, scope: _Scope) -> None:
        """Fold outcomes and corrections other processes stored since the scope's cursors."""
        store = self.store
        router = scope.router
        stored_config = store.get_config(scope.tenant, scope.goal)
        config = ExplorationConfig.from_dict(stored_config) if stored_config else None
        if config is not None and config != router.config:
            router.config = config  # set by another process or replica
        self._sync_paths(scope)
        self._sync_log(scope)
        scope.last_sync = time.monotonic()

    def _sync_paths(self, scope: _Scope) -> None:
        router = scope.router
        for record in self.store.list_paths(scope.tenant, scope.goal, include_disabled=True):
            info = _path_info(record)
            known = router.paths.get(info.path_id)
            if known is None or known.info.enabled != info.enabled:
                router.add_path(info)

    def _sync_log(self, scope: _Scope) -> None:
        """Fold the scope's log from its cursors: what :meth:`_sync` does but the settings.

        On its own (a gap in this process's outcomes: another process wrote in between) it
        reads the paths only when the log names one this process does not know yet, so that
        no outcome is skipped; the config and the paths are otherwise refreshed by the next
        full sync, within ``sync_interval_s``.
        """
        store = self.store
        router = scope.router
        scope.pending.clear()  # the log holds them too
        # Stored outcomes carry their *current* value: a correction committed before an
        # outcome was read here is already part of what was folded and must not count again.
        folded: dict[int, float] = {}
        while True:
            batch = store.outcomes_since(
                scope.tenant, scope.goal, scope.pipeline_id, scope.outcome_cursor
            )
            if any(o.path_id is not None and o.path_id not in router.paths for o in batch):
                self._sync_paths(scope)  # registered elsewhere since this process last looked
            for outcome in batch:
                self._fold_outcome(scope, outcome)
                folded[outcome.seq] = outcome.value
            if len(batch) < 10_000:
                break
        for correction in store.corrections_since(
            scope.tenant, scope.goal, scope.pipeline_id, scope.correction_cursor
        ):
            seq = correction.outcome_seq
            if seq > scope.outcome_cursor:
                # Not folded yet: it will be read later with this correction applied.
                scope.correction_cursor = max(scope.correction_cursor, correction.seq)
            elif seq in folded:
                # Read during this sync: apply only the corrections made after that read.
                # A value's corrections form a chain (old -> new), so applying the chain from
                # the first link that starts at the value read gives the current value.
                if folded[seq] == correction.old_value:
                    self._fold_correction(scope, correction)
                    folded[seq] = correction.new_value
                else:
                    scope.correction_cursor = max(scope.correction_cursor, correction.seq)
            else:
                self._fold_correction(scope, correction)

    def _fold_outcome(self, scope: _Scope, outcome: OutcomeRecord) -> None:
        scope.outcome_cursor = max(scope.outcome_cursor, outcome.seq)
        if outcome.path_id is None or outcome.path_id not in scope.router.paths:
            return
        change = scope.router.observe(
            outcome.path_id,
            outcome.value,
            cost_usd=outcome.cost_usd,
            latency_ms=outcome.latency_ms,
            now=outcome.created_at,
            seq=outcome.seq,
        )
        if change is not None:
            self._persist_epoch(scope, outcome.path_id, change)

    def _fold_correction(self, scope: _Scope, correction: CorrectionRecord) -> None:
        scope.correction_cursor = max(scope.correction_cursor, correction.seq)
        if correction.path_id is not None and correction.path_id in scope.router.paths:
            scope.router.correct(
                correction.path_id,
                correction.old_value,
                correction.new_value,
                correction.outcome_seq,
            )

    def _persist_epoch(self, scope: _Scope, path_id: str, change: Change) -> None:
        epoch = scope.router.paths[path_id].epoch_seq
        logger.info("goal %s path %s: %s detected", scope.goal, path_id, change.kind)
        self.store.set_epoch(scope.tenant, scope.goal, scope.pipeline_id, path_id, epoch)

    # -- paths ---------------------------------------------------------------------------------
    def register_path(
        self,
        goal: str,
        model_id: str,
        tool_id: str | Sequence[str] | None = None,
        params: Mapping[str, Any] | None = None,
        risk_level: str = "low",
        *,
        tenant: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Register a path for a goal (idempotent: the same path returns the same id).

        Returns:
            ``path_id``, ``goal``, ``model_id``, ``tool_id``, ``params``, ``risk_level``,
            ``enabled`` and ``created`` (False when it already existed).
        """
        goal = validate_goal(goal)
        spec_dict: dict[str, Any] = {"model": model_id, "tools": tool_id, "params": params}
        if extra:
            spec_dict.update(extra)
        spec = normalise_path(goal, spec_dict, risk_level=risk_level)
        return self.register_spec(spec, tenant=tenant)

    def register_spec(self, spec: PathSpec, *, tenant: str | None = None) -> dict[str, Any]:
        """Register an already normalised path (what Router uses)."""
        tenant = self._tenant(tenant)
        record, created = self.store.register_path(tenant, spec)
        self._path_cache.pop((tenant, spec.goal), None)
        for scope in self._loaded_scopes(tenant, spec.goal):
            with scope.lock:
                scope.router.add_path(_path_info(record))
        return {**_path_dict(record), "created": created}

    def list_paths(
        self, goal: str | None = None, include_disabled: bool = False, *, tenant: str | None = None
    ) -> dict[str, Any]:
        """The registered paths (of one goal if given)."""
        if goal is not None:
            goal = validate_goal(goal)
        records = self.store.list_paths(
            self._tenant(tenant), goal, include_disabled=bool(include_disabled)
        )
        return {"paths": [_path_dict(r) for r in records]}

    def disable_path(self, path_id: str, *, tenant: str | None = None) -> dict[str, Any]:
        """Soft-delete a path: traffic stops, its history is kept. Raises NotFoundError."""
        return self._set_enabled(path_id, False, tenant)

    def enable_path(self, path_id: str, *, tenant: str | None = None) -> dict[str, Any]:
        """Re-enable a disabled path. Raises NotFoundError."""
        return self._set_enabled(path_id, True, tenant)

    def _set_enabled(self, path_id: str, enabled: bool, tenant: str | None) -> dict[str, Any]:
        tenant = self._tenant(tenant)
        if not isinstance(path_id, str) or not path_id:
            raise ValidationError("path_id must be a non-empty string", field="path_id")
        record = self.store.set_path_enabled(tenant, path_id, enabled)
        if record is None:
            raise NotFoundError(f"no path {path_id!r} for tenant {tenant!r}")
        self._path_cache.pop((tenant, record.goal), None)
        for scope in self._loaded_scopes(tenant, record.goal):
            with scope.lock:
                scope.router.add_path(_path_info(record))
        return {
            "status": "enabled" if enabled else "disabled",
            "path_id": path_id,
            "goal": record.goal,
        }

    # -- exploration config --------------------------------------------------------------------
    def get_exploration_config(self, goal: str, *, tenant: str | None = None) -> dict[str, Any]:
        """The goal's exploration config (defaults when never set)."""
        goal = validate_goal(goal)
        stored = self.store.get_config(self._tenant(tenant), goal)
        config = ExplorationConfig.from_dict(stored) if stored else ExplorationConfig()
        return {"goal": goal, **config.to_dict()}

    def set_exploration_config(
        self, goal: str, *, tenant: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Change some exploration settings of a goal (others keep their value)."""
        goal = validate_goal(goal)
        tenant = self._tenant(tenant)
        stored = self.store.get_config(tenant, goal) or {}
        ExplorationConfig.from_dict({k: None for k in fields})  # unknown keys, even set to None
        merged = {**stored, **{k: v for k, v in fields.items() if v is not None}}
        if "exploration_rate" in fields and fields["exploration_rate"] is None:
            merged.pop("exploration_rate", None)
        config = ExplorationConfig.from_dict(merged)
        self.store.set_config(tenant, goal, config.to_dict())
        for scope in self._loaded_scopes(tenant, goal):
            with scope.lock:
                scope.router.config = config
        return {"goal": goal, **config.to_dict()}

    # -- decide --------------------------------------------------------------------------------
    def decide(
        self,
        goal: str,
        task_risk_level: str = "low",
        candidate_model_ids: Sequence[str] | None = None,
        pipeline_id: str | None = None,
        *,
        exploration_rate: float | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """Choose a path for one call of this goal.

        ``exploration_rate`` overrides the goal's configured rate for this decision only
        (what a Router created with ``exploration_rate=`` uses).

        Returns:
            ``trace_id`` (32 lowercase hex), ``path_id``, ``model_id``, ``tool_id``,
            ``params``, ``goal``, ``pipeline_id``, ``reason``, ``confidence``, ``exploration``,
            ``success_rate``, ``sample_count``.

        Raises:
            ValidationError: bad arguments.
            NoPathAvailableError: the goal has no enabled path (among the candidates).
        """
        tenant = self._tenant(tenant)
        goal = validate_goal(goal)
        risk = validate_risk_level(task_risk_level, field_name="task_risk_level")
        pipeline = validate_pipeline_id(pipeline_id)
        candidates = _candidates(candidate_model_ids)
        if exploration_rate is not None:
            ExplorationConfig(exploration_rate=exploration_rate)  # validates the rate
        scope = self._scope(tenant, goal, pipeline)
        now = time.time()
        with scope.lock:
            if time.monotonic() - scope.last_sync > self.sync_interval_s:
                self._sync(scope)
            elif scope.pending:
                self._drain(scope)
            router = scope.router
            if not router.paths:
                raise NoPathAvailableError(
                    f"goal {goal!r} has no registered path; register_path() first", goal=goal
                )
            try:
                selection = router.select(
                    scope.rng,
                    task_risk_level=risk,
                    candidate_model_ids=candidates,
                    now=now,
                    exploration_rate=exploration_rate,
                )
            except NoPathAvailableError as exc:
                raise NoPathAvailableError(f"goal {goal!r}: {exc.message}", goal=goal) from None
            info = router.paths[selection.path_id].info
        # The background writer draws this scope's next decision while the caller waits on
        # its provider (see _draw_ahead).
        self._wanting[id(scope)] = (scope, (risk, candidates, exploration_rate))
        trace_id = new_trace_id()
        record = DecisionRecord(
            tenant,
            trace_id,
            goal,
            pipeline,
            info.path_id,
            info.model_id,
            selection.reason,
            selection.exploration,
            None,
            now,
        )
        with self._pending_lock:
            self._pending.append((record, selection))
            issued = self._issued
            issued[(tenant, trace_id)] = _Issued(goal, pipeline, info.path_id, info.model_id)
            if len(issued) > _RECENT_DECISIONS:
                issued.popitem(last=False)
        self._ensure_flusher()
        return {
            "trace_id": trace_id,
            "path_id": info.path_id,
            "model_id": info.model_id,
            "tool_id": info.tool_id,
            "params": dict(info.params),
            "goal": goal,
            "pipeline_id": pipeline or None,
            "reason": selection.reason,
            "confidence": selection.confidence,
            "exploration": selection.exploration,
            "success_rate": selection.success_rate,
            "sample_count": selection.sample_count,
        }

    # -- outcomes ------------------------------------------------------------------------------
    def report_outcome(
        self,
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
        *,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        pipeline_id: str | None = None,
        tenant: str | None = None,
        wait: bool = True,
        outcome_id: str | None = None,
    ) -> dict[str, Any]:
        """Record what happened; durable when this returns (with ``wait=True``).

        ``outcome_id`` is an idempotency key: an outcome whose key was already stored is
        acknowledged but not counted again (remote clients replaying after an outage).

        With ``wait=False`` the outcome is validated and attributed now, then queued for the
        background writer, which stores it within ``outcome_delay_s`` (with the outcomes
        queued meanwhile, in one commit); ``flush()`` and interpreter exit store what is
        queued. The Router reports this way so routing adds almost no latency to a call.

        ``score`` (clamped to [0, 1]) counts as ``score`` successes and ``1 - score``
        failures; with only a score, ``success = score >= 0.5``. Trace ids this service never
        issued are accepted (clients mint their own when failing open) and attributed by
        ``model_id`` / ``tool_id`` / ``execution_params``; several outcomes per trace are
        accepted (a failure on one model, then a success on another).

        Returns:
            ``{"status": "accepted", "trace_id", "goal", "path_id"}`` (``path_id`` None when
            the outcome matches no registered path: it is stored, but cannot steer routing).
        """
        record = self._outcome_record(
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
            cost_usd,
            latency_ms,
            input_tokens,
            output_tokens,
            pipeline_id,
            tenant,
            outcome_id,
        )
        if wait:
            self._stored(record)
        else:
            self._enqueue(record)
        return self._accepted(record)

    def queue_outcome(
        self,
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
        *,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        pipeline_id: str | None = None,
        tenant: str | None = None,
    ) -> None:
        """``report_outcome(wait=False)`` with the checks moved to the background writer.

        For callers that built every field themselves: the Router's automatic reports, made
        between a provider's answer and the return to the agent. The writer validates and
        attributes the outcome when it stores the queue (within ``outcome_delay_s``), so the
        caller pays for one append; an outcome that fails validation there is logged with
        the reason and not stored. ``flush()`` stores the queue at once. Use
        :meth:`report_outcome` to have a bad outcome raise.
        """
        build = partial(
            self._outcome_record,
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
            cost_usd,
            latency_ms,
            input_tokens,
            output_tokens,
            pipeline_id,
            tenant,
        )
        self._enqueue(_Deferred(build, time.time()))

    def _enqueue(self, item: OutcomeRecord | _Deferred) -> None:
        with self._outbox_lock:
            self._outbox.append(item)
            # Only a sleeping writer needs waking; a busy one collects this on its own.
            asleep, self._writer_asleep = self._writer_asleep, False
        self._ensure_flusher()
        if asleep:
            self._wake.set()

    async def areport_outcome(
        self,
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
        *,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        pipeline_id: str | None = None,
        tenant: str | None = None,
        outcome_id: str | None = None,
    ) -> dict[str, Any]:
        """:meth:`report_outcome` for asyncio code: durable when it returns, loop never blocked.

        The outcome is validated, attributed and stored by a reporter thread. Every call that
        arrives while that thread is committing joins its next commit (one commit for all the
        tasks of every loop reporting meanwhile), and each caller gets its own answer or error
        (a validation error, or the store's error; one call's bad outcome does not fail the
        others). A cancelled caller's outcome is still stored.

        Example:
            >>> import asyncio
            >>> intel = Intelligence(":memory:")
            >>> _ = intel.register_path("extract_company", "gpt-4o")
            >>> decision = intel.decide("extract_company")
            >>> report = intel.areport_outcome(decision["trace_id"], "extract_company", True)
            >>> asyncio.run(report)["status"]
            'accepted'
            >>> intel.close()
        """
        build = partial(
            self._outcome_record,
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
            cost_usd,
            latency_ms,
            input_tokens,
            output_tokens,
            pipeline_id,
            tenant,
            outcome_id,
        )
        loop = asyncio.get_running_loop()
        report = _Report(build, loop.create_future(), loop)
        with self._reporter_lock:
            if self._reports_closed:
                return self._accepted(self._stored(build()))  # after close(): as report_outcome
            self._reports.put(report)
            if self._reporter is None:
                self._reporter = threading.Thread(
                    target=self._report_loop, name="kalibr-reporter", daemon=True
                )
                self._reporter.start()
        # shield: a cancelled caller (a client gone) must not cancel the write it is waiting for
        try:
            return await asyncio.shield(report.future)
        except asyncio.CancelledError:
            report.abandoned = True  # an error is then logged: nobody else would see it
            raise

    def _report_loop(self) -> None:
        """The reporter thread: store the queued ``areport_outcome`` calls, a batch per commit."""
        while True:
            first = self._reports.get()
            batch = [first]
            while batch[-1] is not None:
                try:
                    batch.append(self._reports.get_nowait())
                except queue.Empty:
                    break
            stopping = batch[-1] is None
            reports = [r for r in batch if r is not None]
            if reports:
                self._write_reports(reports)
                if self._wanting and self._reports.empty():
                    self._draw_ahead()  # idle until the next report: the next decisions
            if stopping:
                return

    def _write_reports(self, reports: list[_Report]) -> None:
        for report in reports:
            try:
                report.record = report.build()
            except Exception as exc:  # invalid: this caller's error, not the batch's
                report.error = exc
        stored = [r.record for r in reports if r.record is not None]
        try:
            if stored:
                self.store.record_outcomes(stored)
        except Exception:
            # One commit failed: store each call's outcome alone, so that an outcome the store
            # refuses fails only its own call (and an unreachable store fails each call).
            stored = []
            for report in reports:
                if report.record is None:
                    continue
                try:
                    self.store.record_outcomes([report.record])
                except Exception as exc:
                    report.error = exc
                else:
                    stored.append(report.record)
        self._fold_stored(stored)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Report]] = {}
        for report in reports:
            if report.abandoned:  # nobody waits for this answer any more (its loop may be gone)
                _log_unanswered(report)
                continue
            by_loop.setdefault(report.loop, []).append(report)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._settle, settled)
            except RuntimeError:  # a closed loop: nobody is waiting there for these answers
                for report in settled:
                    _log_unanswered(report)

    def _fold_stored(self, records: list[OutcomeRecord]) -> None:
        """Fold stored outcomes into their scopes now (a writer thread, off any event loop)."""
        scopes: dict[int, _Scope] = {}
        for record in records:
            scope = self._apply_stored(record)
            if scope is not None:
                scopes[id(scope)] = scope
        for scope in scopes.values():
            with scope.lock:
                if scope.pending:
                    self._drain(scope)

    def _settle(self, reports: list[_Report]) -> None:
        for report in reports:
            if report.future.done():
                continue
            if report.abandoned:  # cancelled since the reporter looked
                _log_unanswered(report)
                continue
            if report.error is not None:
                report.future.set_exception(report.error)
            else:
                assert report.record is not None
                report.future.set_result(self._accepted(report.record))

    def _stored(self, record: OutcomeRecord) -> OutcomeRecord:
        self.store.record_outcomes([record])
        self._apply_stored(record)
        return record

    @staticmethod
    def _accepted(record: OutcomeRecord) -> dict[str, Any]:
        return {
            "status": "accepted",
            "trace_id": record.trace_id,
            "goal": record.goal,
            "path_id": record.path_id,
        }

    def _outcome_record(
        self,
        trace_id: str,
        goal: str,
        success: bool | None,
        score: float | None,
        failure_reason: str | None,
        failure_category: str | None,
        metadata: Mapping[str, Any] | None,
        model_id: str | None,
        tool_id: str | None,
        execution_params: Mapping[str, Any] | None,
        cost_usd: float | None,
        latency_ms: float | None,
        input_tokens: int | None,
        output_tokens: int | None,
        pipeline_id: str | None,
        tenant: str | None,
        outcome_id: str | None = None,
    ) -> OutcomeRecord:
        tenant = self._tenant(tenant)
        trace_id = validate_trace_id(trace_id)
        goal = validate_goal(goal)
        clamped = validate_score(score)
        if success is None:
            if clamped is None:
                raise ValidationError("give success (a bool) or a score", field="success")
            success = clamped >= 0.5
        elif not isinstance(success, bool):
            raise ValidationError(
                f"success must be a bool, got {type(success).__name__}", field="success"
            )
        category = validate_failure_category(failure_category)
        reason = _optional_text(failure_reason, "failure_reason")
        meta = _json_mapping(metadata, "metadata")
        model = _optional_text(model_id, "model_id")
        tool = _optional_tool(tool_id)
        params = _json_mapping(execution_params, "execution_params")
        pipeline = validate_pipeline_id(pipeline_id) if pipeline_id is not None else None
        path_id, pipeline = self._attribute(tenant, goal, trace_id, model, tool, params, pipeline)
        return OutcomeRecord(
            tenant=tenant,
            goal=goal,
            pipeline_id=pipeline,
            trace_id=trace_id,
            path_id=path_id,
            model_id=model,
            tool_id=tool,
            params=params,
            success=success,
            score=clamped,
            value=clamped if clamped is not None else float(success),
            failure_category=category,
            failure_reason=reason,
            metadata=meta,
            cost_usd=validate_nonnegative(cost_usd, "cost_usd"),
            latency_ms=validate_nonnegative(latency_ms, "latency_ms"),
            input_tokens=validate_count(input_tokens, "input_tokens"),
            output_tokens=validate_count(output_tokens, "output_tokens"),
            created_at=time.time(),
            outcome_id=(
                None
                if outcome_id is None
                else validate_trace_id(outcome_id, field_name="outcome_id")
            ),
        )

    def _attribute(
        self,
        tenant: str,
        goal: str,
        trace_id: str,
        model_id: str | None,
        tool_id: str | None,
        params: dict[str, Any] | None,
        pipeline: str | None,
    ) -> tuple[str | None, str]:
        """Which path (and pipeline) an outcome belongs to."""
        with self._pending_lock:
            issued = self._issued.get((tenant, trace_id))
        if issued is None:
            decision = self.store.get_decision(tenant, trace_id)
            if decision is not None:
                issued = _Issued(
                    decision.goal, decision.pipeline_id, decision.path_id, decision.model_id
                )
        if issued is not None and issued.goal == goal:
            if pipeline is None:
                pipeline = issued.pipeline_id
            if model_id is None or model_id == issued.model_id:
                return issued.path_id, pipeline
        pipeline = pipeline if pipeline is not None else DEFAULT_PIPELINE
        if model_id is None:
            logger.info(
                "outcome %s for %s has no known decision and no model_id: stored without a path",
                trace_id,
                goal,
            )
            return None, pipeline
        matches = [
            r
            for r in self._goal_paths(tenant, goal)
            if _spec_of(r).matches(model_id, tool_id, params)
        ]
        if len(matches) > 1:
            enabled = [r for r in matches if r.enabled]
            matches = enabled if len(enabled) == 1 else matches
        if len(matches) == 1:
            return matches[0].path_id, pipeline
        logger.info(
            "outcome %s for %s: model %s matches %d registered paths; stored without a path",
            trace_id,
            goal,
            model_id,
            len(matches),
        )
        return None, pipeline

    def _goal_paths(self, tenant: str, goal: str) -> list[PathRecord]:
        """The goal's paths, cached for ``sync_interval_s`` (the same bounded staleness)."""
        key = (tenant, goal)
        cached = self._path_cache.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] <= self.sync_interval_s:
            return cached[1]
        records = self.store.list_paths(tenant, goal, include_disabled=True)
        self._path_cache[key] = (now, records)
        return records

    def _apply_stored(self, record: OutcomeRecord) -> _Scope | None:
        """Queue a stored outcome for its scope; the next decision folds it (cheap report).

        Returns:
            The scope it was queued for (None: a duplicate, or a scope not loaded yet).
        """
        if record.duplicate:
            return None
        key = (record.tenant, record.goal, record.pipeline_id)
        scope = self._scopes.get(key)
        if scope is None:
            return None  # loaded from the store when first needed
        with scope.lock:
            scope.pending.append(record)
        return scope

    def _drain(self, scope: _Scope) -> None:
        """Fold this process's queued outcomes in log order; read the log on a gap."""
        pending = sorted(scope.pending, key=lambda r: r.seq)
        scope.pending.clear()
        for record in pending:
            if record.seq <= scope.outcome_cursor:
                continue  # already folded by a sync
            if record.prev_seq != scope.outcome_cursor:
                self._sync_log(scope)  # another process wrote in between: fold the log
                return
            self._fold_outcome(scope, record)

    def update_outcome(
        self,
        trace_id: str,
        goal: str,
        success: bool | None = None,
        score: float | None = None,
        failure_reason: str | None = None,
        failure_category: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """Correct the latest outcome of (trace_id, goal) with a late signal.

        Only the fields passed (not None) change; ``metadata`` is merged. Routing learns from
        the score when the outcome has one (else from success): to correct what a scored
        outcome taught, pass the new ``score``. The posterior is
        corrected (old contribution out, new one in), exactly as if the corrected outcome had
        been reported in the first place.

        Returns:
            ``{"status": "updated" | "no_changes", "trace_id", "goal", "fields_updated"}``.

        Raises:
            NotFoundError: no outcome exists for this trace_id and goal.
        """
        tenant = self._tenant(tenant)
        trace_id = validate_trace_id(trace_id)
        goal = validate_goal(goal)
        if success is not None and not isinstance(success, bool):
            raise ValidationError(
                f"success must be a bool, got {type(success).__name__}", field="success"
            )
        changes: dict[str, Any] = {
            "success": success,
            "score": validate_score(score),
            "failure_reason": _optional_text(failure_reason, "failure_reason"),
            "failure_category": validate_failure_category(failure_category),
            "metadata": validate_mapping(metadata, "metadata"),
        }
        updated: list[str] = []

        def apply(current: OutcomeRecord) -> OutcomeRecord | None:
            for name in _UPDATABLE:
                value = changes[name]
                if value is None:
                    continue
                if name == "metadata":
                    value = {**(current.metadata or {}), **value}
                if getattr(current, name) != value:
                    setattr(current, name, value)
                    updated.append(name)
            if not updated:
                return None
            current.value = current.score if current.score is not None else float(current.success)
            current.updated_at = time.time()
            return current

        self._drain_outbox()  # the outcome may still be queued by report_outcome(wait=False)
        result = self.store.update_latest_outcome(tenant, goal, trace_id, apply)
        if result is None:
            raise NotFoundError(
                f"no outcome for trace_id {trace_id!r} and goal {goal!r}",
                goal=goal,
                trace_id=trace_id,
            )
        before, _after, correction = result
        if correction is not None:
            scope = self._scopes.get((tenant, goal, before.pipeline_id))
            if scope is not None:
                with scope.lock:
                    if (
                        correction.seq == scope.correction_cursor + 1
                        and correction.outcome_seq <= scope.outcome_cursor
                    ):
                        self._fold_correction(scope, correction)
                    else:  # the outcome itself (or earlier corrections) not folded yet
                        self._sync(scope)
        return {
            "status": "updated" if updated else "no_changes",
            "trace_id": trace_id,
            "goal": goal,
            "fields_updated": updated,
        }

    # -- deterministic views -------------------------------------------------------------------
    def _synced_scope(self, tenant: str, goal: str, pipeline_id: str | None) -> _Scope:
        """A scope for a read (stats, policy, insights), up to date with the store."""
        scope = self._scope(tenant, goal, validate_pipeline_id(pipeline_id))
        if scope.router.paths:  # else just loaded, and not kept
            with scope.lock:
                self._sync(scope)
        return scope

    def get_policy(
        self,
        goal: str,
        constraints: Mapping[str, Any] | None = None,
        window_hours: float | None = None,
        *,
        pipeline_id: str | None = None,
        include_tools: bool = True,
        include_params: Sequence[str] | None = None,
        task_type: str | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """The best path for a goal, deterministically (no sampling), with alternatives.

        Without ``window_hours`` the live posteriors are used (``source: "realtime"``,
        reflecting detected changes); with it, the outcomes of that window
        (``source: "historical"``). Under constraints only paths meeting all of them are
        recommended; when none does, ``recommended_model`` is None and ``reasoning`` says why.

        Raises:
            NotFoundError: the goal has no outcome data yet.
        """
        tenant = self._tenant(tenant)
        goal = validate_goal(goal)
        limits = _constraint_args(constraints)
        if window_hours is not None:
            window_hours = _window(window_hours)
        _ = task_type  # accepted for wire compatibility; goals are the task types here
        states = self._policy_states(tenant, goal, pipeline_id, window_hours)
        if not any(s.eff_count for s in states):
            raise NotFoundError(f"no outcome data for goal {goal!r} yet", goal=goal)
        ranked = self._rank(states, **limits)
        eligible = [r for r in ranked if r.meets_constraints and r.state.info.enabled]
        source = "historical" if window_hours is not None else "realtime"
        base: dict[str, Any] = {
            "goal": goal,
            "source": source,
            "window_hours": window_hours,
            "constraints": {k: v for k, v in limits.items() if v is not None} or None,
        }
        if not eligible:
            misses = {r.state.info.model_id: list(r.unmet) for r in ranked if r.state.info.enabled}
            return {
                **base,
                "recommended_model": None,
                "recommended_provider": None,
                "recommended_path_id": None,
                "recommended_tool": None,
                "recommended_params": None,
                "outcome_success_rate": None,
                "outcome_sample_count": 0,
                "confidence": 0.0,
                "risk_score": 1.0,
                "reasoning": "no path meets the constraints: "
                + "; ".join(
                    f"{model} misses {', '.join(unmet)}" for model, unmet in misses.items()
                ),
                "alternatives": [],
            }
        best = eligible[0].state
        params = dict(best.info.params)
        if include_params is not None:
            params = {k: v for k, v in params.items() if k in set(include_params)}
        confidence = _policy_confidence(best, [r.state for r in eligible[1:]])
        return {
            **base,
            "recommended_model": best.info.model_id,
            "recommended_provider": provider_name(best.info.model_id),
            "recommended_path_id": best.info.path_id,
            "recommended_tool": best.info.tool_id if include_tools else None,
            "recommended_params": params or None,
            "outcome_success_rate": _rate(best),
            "outcome_sample_count": best.eff_count,
            "confidence": confidence,
            "risk_score": round(1.0 - best.mean * confidence, 4),
            "reasoning": _reasoning(best, eligible, ranked),
            "alternatives": [_alternative(r.state) for r in eligible[1:]],
        }

    def _rank(self, states: Sequence[PathState], **limits: Any) -> list[RankedPath]:
        """Rank path states (live or windowed) the way the engine ranks them."""
        ranker = GoalRouter(tuning=self._tuning)
        # Copies: ranking recomputes tie-set membership, which must not leak into live state.
        ranker.paths = {s.info.path_id: copy.copy(s) for s in states}
        return ranker.ranking(**limits)

    def _policy_states(
        self, tenant: str, goal: str, pipeline_id: str | None, window_hours: float | None
    ) -> list[PathState]:
        scope = self._synced_scope(tenant, goal, pipeline_id)
        with scope.lock:
            live = list(scope.router.paths.values())
            if window_hours is None:
                return live
            since = time.time() - window_hours * 3600
            pipeline = validate_pipeline_id(pipeline_id)
            windowed: dict[str, PathState] = {}
            for s in live:
                windowed[s.info.path_id] = PathState(info=s.info, tuning=self._tuning)
        for outcome in self.store.outcomes_in_window(tenant, goal, since):
            if outcome.pipeline_id == pipeline and outcome.path_id in windowed:
                state = windowed[outcome.path_id]
                state.add(outcome.value)
                if outcome.cost_usd is not None:
                    state.cost_sum += outcome.cost_usd
                    state.cost_n += 1
                if outcome.latency_ms is not None:
                    state.latency_sum += outcome.latency_ms
                    state.latency_n += 1
        return list(windowed.values())

    def get_alternative(
        self,
        goal: str,
        exclude_models: Sequence[str],
        constraints: Mapping[str, Any] | None = None,
        window_hours: float | None = None,
        *,
        pipeline_id: str | None = None,
        task_type: str | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """The next best path after excluding models that already failed.

        Raises:
            NoPathAvailableError: every enabled path is excluded (or misses the constraints).
        """
        tenant = self._tenant(tenant)
        goal = validate_goal(goal)
        excluded = _candidates(exclude_models, field_name="exclude_models", allow_empty=True)
        if excluded is None:
            raise ValidationError(
                "exclude_models must be a list of model ids", field="exclude_models"
            )
        limits = _constraint_args(constraints)
        if window_hours is not None:
            window_hours = _window(window_hours)
        _ = task_type
        states = [
            s
            for s in self._policy_states(tenant, goal, pipeline_id, window_hours)
            if s.info.enabled and s.info.model_id not in set(excluded)
        ]
        ranked = [r for r in self._rank(states, **limits) if r.meets_constraints]
        if not ranked:
            raise NoPathAvailableError(
                f"all paths of goal {goal!r} are exhausted: excluded {sorted(set(excluded))}"
                + (" or filtered by the constraints" if any(limits.values()) else ""),
                goal=goal,
            )
        best = ranked[0].state
        return {
            "goal": goal,
            "recommended_model": best.info.model_id,
            "recommended_provider": provider_name(best.info.model_id),
            "recommended_path_id": best.info.path_id,
            "recommended_tool": best.info.tool_id,
            "recommended_params": dict(best.info.params) or None,
            "outcome_success_rate": _rate(best),
            "outcome_sample_count": best.eff_count,
            "confidence": _policy_confidence(best, [r.state for r in ranked[1:]]),
            "reasoning": (f"next best after excluding {sorted(set(excluded))}: " + _describe(best)),
            "remaining_alternatives": len(ranked) - 1,
        }

    def stats(
        self, goal: str, *, pipeline_id: str | None = None, tenant: str | None = None
    ) -> dict[str, Any]:
        """Goal-level routing statistics with per-path performance (live posteriors)."""
        tenant = self._tenant(tenant)
        goal = validate_goal(goal)
        scope = self._synced_scope(tenant, goal, pipeline_id)
        with scope.lock:
            router = scope.router
            states = list(router.paths.values())
            rows = [_path_stats(s, router.tick) for s in states]
            total = sum(s.count for s in states)
            successes = sum(s.successes for s in states)
        return {
            "goal": goal,
            "pipeline_id": scope.pipeline_id or None,
            "total_outcomes": total,
            "success_rate": round(successes / total, 4) if total else None,
            "decisions": router.tick,
            "config": router.config.to_dict(),
            "paths": rows,
        }

    def get_insights(
        self,
        goal: str | None = None,
        window_hours: float = 168,
        *,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """Structured diagnostics per goal (schema_version "1.0"), for a coding agent."""
        tenant = self._tenant(tenant)
        window = _window(window_hours)
        goals = [validate_goal(goal)] if goal is not None else self.store.list_goals(tenant)
        since = time.time() - window * 3600
        by_goal: dict[str, list[OutcomeRecord]] = {g: [] for g in goals}
        for outcome in self.store.outcomes_in_window(tenant, goal, since):
            by_goal.setdefault(outcome.goal, []).append(outcome)
        entries = []
        for name in goals:
            views = []
            scope = self._synced_scope(tenant, name, None)
            with scope.lock:
                tick = scope.router.tick
                for state in scope.router.paths.values():
                    info = state.info
                    views.append(
                        PathView(
                            info.path_id,
                            info.model_id,
                            info.tool_id,
                            dict(info.params),
                            info.enabled,
                            state.trend(tick),
                            state.demoted,
                        )
                    )
                minimum = scope.router.config.min_samples_before_exploit
            entries.append(goal_insight(name, by_goal[name], views, min_samples=minimum))
        return {
            "schema_version": "1.0",
            "tenant_id": tenant,
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "window_hours": window,
            "goals": entries,
            "cross_goal_summary": cross_goal_summary(entries),
        }

    def timeline(
        self,
        goal: str | None = None,
        window_hours: float = 24,
        buckets: int = 24,
        *,
        rolling: int = DEFAULT_ROLLING,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        """Each goal's outcomes over time: per-path traffic share and rolling success.

        The window ``[now - window_hours, now]`` is cut into ``buckets`` equal slices; a
        path's rolling success rate in a slice is that of its last ``rolling`` outcomes up to
        the slice's end. Timestamps are seconds since the epoch.

        Example:
            >>> intel = Intelligence(":memory:")
            >>> _ = intel.register_path("summarize", "gpt-4o")
            >>> _ = intel.report_outcome("t-1", "summarize", success=True, model_id="gpt-4o")
            >>> series = intel.timeline("summarize", window_hours=1, buckets=4)["goals"][0]
            >>> [bucket["outcomes"] for bucket in series["buckets"]]
            [0, 0, 0, 1]
            >>> intel.close()
        """
        tenant = self._tenant(tenant)
        window = _window(window_hours)
        buckets = _bounded_int(buckets, "buckets", 1, MAX_BUCKETS)
        rolling = _bounded_int(rolling, "rolling", 1, 100_000)
        goals = [validate_goal(goal)] if goal is not None else self.store.list_goals(tenant)
        end = time.time()
        # At least a millisecond: a shorter window vanishes in the clock's float resolution.
        start = end - max(window * 3600, 1e-3)
        by_goal: dict[str, list[OutcomeRecord]] = {g: [] for g in goals}
        for outcome in self.store.outcomes_in_window(tenant, goal, start):
            by_goal.setdefault(outcome.goal, []).append(outcome)
        entries = []
        for name in goals:
            paths = self.store.list_paths(tenant, name, include_disabled=True)
            series = bucket_timeline(
                by_goal[name], [p.path_id for p in paths], start, end, buckets, rolling=rolling
            )
            entries.append(
                {
                    "goal": name,
                    "paths": [
                        {
                            "path_id": p.path_id,
                            "model_id": p.model_id,
                            "tool_id": p.tool_id,
                            "enabled": p.enabled,
                        }
                        for p in paths
                    ],
                    "buckets": [_bucket_dict(b) for b in series],
                }
            )
        return {
            "tenant_id": tenant,
            "window_hours": window,
            "start": start,
            "end": end,
            "bucket_seconds": (end - start) / buckets,
            "rolling_outcomes": rolling,
            "goals": entries,
        }


# -- helpers ----------------------------------------------------------------------------------
PROPENSITY_DRAWS = 128
# How many times as many draws a snapshot gets when a choice made from it was never drawn.
_RARE_FACTOR = 16


def estimate_propensities(
    selections: Sequence[Selection], rng: np.random.Generator, draws: int = PROPENSITY_DRAWS
) -> list[float]:
    """Monte Carlo propensities of many decisions at once (one numpy draw per path count).

    Each posterior snapshot is re-drawn ``draws`` times under the decision rule (the draw, then
    the cheaper tie member unless the winner leads it by more than the margin); a decision's
    propensity is the share of its snapshot's draws that lead to the path it chose, plus its
    uniform exploration share. Decisions made from the same snapshot (no outcome folded in
    between, the usual case under load) share its draws. Deterministic choices (probes, a
    single path) have propensity 1.

    A choice that was made is never given propensity 0 (inverse-propensity weights need it
    positive): when none of the draws leads to it, its snapshot is drawn ``_RARE_FACTOR``
    times as often, and a choice still never drawn gets half of one draw's share.
    """
    result = [1.0] * len(selections)
    wanted: list[tuple[int, PropensityInputs]] = []
    for position, selection in enumerate(selections):
        inputs = selection.inputs
        if inputs is None or len(inputs.alphas) < 2:
            continue
        if not inputs.sampled:  # the argmax: the same path whenever it is not exploring
            result[position] = inputs.with_share(1.0)
            continue
        wanted.append((position, inputs))
    shares = snapshot_shares([inputs.snapshot for _, inputs in wanted], rng, draws)
    more = draws * _RARE_FACTOR
    rare = [i.snapshot for _, i in wanted if shares[i.snapshot][i.index] == 0.0]
    shares.update(snapshot_shares(rare, rng, more))
    for position, inputs in wanted:
        result[position] = inputs.with_share(shares[inputs.snapshot][inputs.index] or 0.5 / more)
    return result


_live: weakref.WeakSet[Intelligence] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for intel in list(_live):
        try:
            intel.close()
        except Exception:  # at exit, one failing instance must not stop the others
            logger.exception("closing kalibr-core intelligence at exit failed")


def _log_unanswered(report: _Report) -> None:
    """An ``areport_outcome`` whose caller is gone: its failure would otherwise go unseen."""
    if report.error is None:
        return  # stored: durable whether or not anyone hears it
    record = report.record
    logger.error(
        "an outcome reported with areport_outcome was not stored (%s: %s) and its caller was "
        "gone before the answer%s; it is lost unless the client sends it again",
        type(report.error).__name__,
        report.error,
        f" (trace {record.trace_id}, goal {record.goal})" if record is not None else "",
    )


def _restore(state: PathState, total: PathTotals) -> None:
    state.successes, state.failures, state.count = total.successes, total.failures, total.count
    state.eff_successes = total.eff_successes
    state.eff_failures = total.eff_failures
    state.eff_count = total.eff_count
    state.epoch_seq = total.epoch_seq
    state.cost_sum, state.cost_n = total.cost_sum, total.cost_n
    state.latency_sum, state.latency_n = total.latency_sum, total.latency_n
    state.last_outcome_at = total.last_outcome_at
    state.prime(total.recent_values, total.recent_seqs)


def _path_dict(record: PathRecord) -> dict[str, Any]:
    return {
        "path_id": record.path_id,
        "goal": record.goal,
        "model_id": record.model_id,
        "tool_id": record.tool_id,
        "params": dict(record.params),
        "risk_level": record.risk_level,
        "enabled": record.enabled,
    }


def _spec_of(record: PathRecord) -> PathSpec:
    tools = tuple(record.tool_id.split(",")) if record.tool_id else ()
    return PathSpec(record.goal, record.model_id, tools, record.params)


def _candidates(
    models: Sequence[str] | None,
    *,
    field_name: str = "candidate_model_ids",
    allow_empty: bool = False,
) -> list[str] | None:
    if models is None:
        return None
    if isinstance(models, str) or not isinstance(models, Sequence):
        raise ValidationError(f"{field_name} must be a list of model ids", field=field_name)
    if not models and not allow_empty:
        raise ValidationError(
            f"{field_name} is empty: name at least one model, or leave it out (null) to "
            "consider every path",
            field=field_name,
        )
    result = []
    for model in models:
        if not isinstance(model, str) or not model:
            raise ValidationError(
                f"{field_name} must contain non-empty strings, got {model!r}", field=field_name
            )
        result.append(model)
    return result


_JSON_SCALARS = frozenset({str, int, bool, type(None)})


def _json_mapping(value: object, field_name: str) -> dict[str, Any] | None:
    """:func:`validate_mapping`, without serialising the common flat dict of JSON scalars.

    Every routed outcome carries such a dict (its metadata); a trial ``json.dumps`` of it was
    a tenth of the cost of reporting. String keys and str/int/bool/None/finite float values
    always serialise; anything else takes the full check.
    """
    if type(value) is dict and all(
        type(k) is str and (type(v) in _JSON_SCALARS or (type(v) is float and math.isfinite(v)))
        for k, v in value.items()
    ):
        return dict(value)
    return validate_mapping(value, field_name)


def _optional_text(value: object, field_name: str, limit: int = 4096) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(
            f"{field_name} must be a string, got {type(value).__name__}", field=field_name
        )
    if len(value) > limit:
        raise ValidationError(f"{field_name} is longer than {limit} characters", field=field_name)
    if "\x00" in value:
        raise ValidationError(f"{field_name} must not contain NUL characters", field=field_name)
    return value


def _optional_tool(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return ",".join(sorted(set(value))) or None
    return _optional_text(value, "tool_id", 512)


def _window(hours: object) -> float:
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= 24 * 3650:
        raise ValidationError(
            f"window_hours must be a number of hours > 0 (at most 10 years), got {hours!r}",
            field="window_hours",
        )
    return float(hours)


def _bounded_int(value: object, field_name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(
            f"{field_name} must be a whole number from {low} to {high}, got {value!r}",
            field=field_name,
        )
    return value


def _bucket_dict(bucket: Bucket) -> dict[str, Any]:
    return {
        "start": bucket.start,
        "end": bucket.end,
        "outcomes": bucket.outcomes,
        "successes": bucket.successes,
        "success_rate": _round(bucket.success_rate, 4),
        "unattributed": bucket.unattributed,
        "paths": {
            path_id: {
                "outcomes": point.outcomes,
                "successes": point.successes,
                "traffic_share": round(point.traffic_share, 4),
                "success_rate": _round(point.success_rate, 4),
                "rolling_success_rate": _round(point.rolling_success_rate, 4),
            }
            for path_id, point in bucket.paths.items()
        },
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _rate(state: PathState) -> float | None:
    rate = state.success_rate
    return None if rate is None else round(rate, 4)


def _policy_confidence(best: PathState, others: Sequence[PathState]) -> float:
    learning = min(1.0, best.eff_count / 20)
    if not others:
        return round(learning, 4)
    rival = max(others, key=lambda s: s.mean)
    se = math.sqrt(best.std_error() ** 2 + rival.std_error() ** 2)
    lead = 0.5 * (1 + math.erf((best.mean - rival.mean) / (se * math.sqrt(2))))
    return round(lead * learning, 4)


def _describe(state: PathState) -> str:
    rate = _rate(state)
    cost = state.avg_cost
    text = (
        f"{state.info.model_id} succeeds {rate:.0%} over {state.eff_count} outcomes"
        if rate is not None
        else f"{state.info.model_id} has no outcomes yet"
    )
    if cost is not None:
        text += f", costs ${cost:.6f} per call"
    return text


def _reasoning(best: PathState, eligible: Sequence[Any], ranked: Sequence[Any]) -> str:
    text = _describe(best)
    if len(eligible) > 1:
        runner = eligible[1].state
        text += f"; next: {_describe(runner)}"
        if runner.mean > best.mean:
            text += " (higher success, but within 5 points and more expensive)"
    excluded = [r for r in ranked if not r.meets_constraints and r.state.info.enabled]
    if excluded:
        text += "; excluded by constraints: " + ", ".join(
            f"{r.state.info.model_id} ({', '.join(r.unmet)})" for r in excluded
        )
    return text


def _alternative(state: PathState) -> dict[str, Any]:
    return {
        "path_id": state.info.path_id,
        "model_id": state.info.model_id,
        "tool_id": state.info.tool_id,
        "params": dict(state.info.params),
        "success_rate": _rate(state),
        "sample_count": state.eff_count,
        "avg_cost_usd": _round(state.avg_cost, 10),
        "avg_latency_ms": _round(state.avg_latency, 3),
    }


def _path_stats(state: PathState, tick: int) -> dict[str, Any]:
    info = state.info
    return {
        "path_id": info.path_id,
        "model_id": info.model_id,
        "tool_id": info.tool_id,
        "params": dict(info.params),
        "enabled": info.enabled,
        "risk_level": info.risk_level,
        "success_rate": _rate(state),
        "lifetime_success_rate": (
            None if state.lifetime_success_rate is None else round(state.lifetime_success_rate, 4)
        ),
        "posterior_mean": round(state.mean, 4),
        "sample_count": state.eff_count,
        "total_outcomes": state.count,
        "trend": state.trend(tick),
        "demoted": state.demoted,
        "rolled_back": state.rolled_back,
        "avg_cost_usd": _round(state.avg_cost, 10),
        "avg_latency_ms": _round(state.avg_latency, 3),
        "decisions": state.pulls,
    }


def provider_name(model_id: str) -> str:
    """The provider a model string routes to (prefix, then name conventions)."""
    if "/" in model_id:
        prefix = model_id.split("/", 1)[0]
        if prefix in {"openai", "anthropic", "google", "deepseek", "ollama"}:
            return prefix
        return "huggingface"
    lowered = model_id.lower()
    for prefixes, name in (
        (("gpt-", "o1", "o3", "o4", "tts-", "whisper-", "text-embedding-", "chatgpt-"), "openai"),
        (("claude-",), "anthropic"),
        (("gemini-",), "google"),
        (("deepseek-",), "deepseek"),
        (("eleven_",), "elevenlabs"),
        (("nova-", "aura-"), "deepgram"),
    ):
        if lowered.startswith(prefixes):
            return name
    return "openai"

"""RemoteIntelligence: the Intelligence API served by the HTTP service, failing open.

Selected by ``KALIBR_INTELLIGENCE_URL`` (with ``KALIBR_API_KEY`` and ``KALIBR_TENANT_ID``), or
``configure(url=..., api_key=..., tenant=...)``; the Router and the functional API use it as
they use a local :class:`~kalibr_core.Intelligence`. What it adds (see docs/remote.md):

* **A tight time budget.** A decision waits at most ``RemoteBudget.decide`` (250 ms) in total
  for the service. After a failure the service is left alone for a back-off interval (0.25 s
  doubling to 10 s): decisions then answer locally at once instead of paying the budget again.
* **Fail-open decisions.** On a timeout, a connection error, a 5xx, 401/403, 408 or 429, the
  decision comes from the last snapshot of the goal's posteriors (:mod:`kalibr_core._fallback`),
  else from the first registered path; it carries a client-minted trace id, ``reason:
  "fallback"`` and ``source: "fail_open"``. The agent never sees the failure.
* **No outcome lost, none counted twice.** Every outcome gets an ``outcome_id`` (the service's
  idempotency key) and is appended to a durable on-disk outbox (:mod:`kalibr_core._outbox`)
  before anything is sent; it leaves the outbox only once the service acknowledged it. A
  background sender delivers the outbox in order and retries with back-off while the service is
  down (:mod:`kalibr_core._sender`); ``flush()`` drains it (bounded), and so does interpreter
  exit. Delivery is at least once, the service stores each ``outcome_id`` once: every outcome
  is recorded exactly once.
  Corrections (``update_outcome``) and the path registrations the service could not take go
  through the same queue, so they reach it in order.
* **Rejections are kept.** An entry the service rejects as invalid (4xx other than
  401/403/408/425/429) moves to the outbox's dead letters and is logged as an error.

Arguments are validated locally by the same functions as in local mode, so bad input raises the
same :class:`~kalibr_core.ValidationError` before anything is queued or sent.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import math
import os
import threading
import time
import urllib.parse
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from kalibr_core._domain import (
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
from kalibr_core._errors import (
    ConfigurationError,
    IntelligenceUnavailableError,
    KalibrError,
    NoPathAvailableError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from kalibr_core._fallback import FallbackRouter
from kalibr_core._intelligence import (
    DEFAULT_TENANT,
    _candidates,
    _constraint_args,
    _optional_text,
    _optional_tool,
    _window,
)
from kalibr_core._outbox import EntryKind, Outbox, default_outbox_path
from kalibr_core._sender import (
    OutboxSender,
    Rejected,
    ServiceHealth,
    UnreachableError,
    error_message,
    json_object,
    retryable,
)
from kalibr_core._version import __version__
from kalibr_core.engine import EngineTuning, ExplorationConfig

logger = logging.getLogger("kalibr_core.remote")

_DECIDE = "/api/v1/routing/decide"
_PATHS = "/api/v1/routing/paths"
_STATS = "/api/v1/routing/stats"
_CONFIG = "/api/v1/routing/config"
_INSIGHTS = "/api/v1/intelligence/insights"
_POLICY = "/api/v1/intelligence/policy"
_ALTERNATIVE = "/api/v1/intelligence/get-alternative"
_RECENT_DECISIONS = 50_000


@dataclass(frozen=True, slots=True)
class RemoteBudget:
    """Time budgets of the remote client, in seconds.

    Attributes:
        decide: Total time a decision may wait for the service before failing open.
        report: How long ``report_outcome(wait=True)``, ``update_outcome`` and
            ``register_path`` wait for the service's acknowledgement (the request stays
            queued and is replayed if it does not come), and the limit of each replayed request.
        query: Reads and admin calls (policy, insights, stats, paths, config), which raise
            :class:`~kalibr_core.IntelligenceUnavailableError` when the service is down.
        flush: How long ``flush()`` tries to drain the outbox.
        exit: How long ``close()`` and the flush at interpreter exit may take.
        retry_initial: First back-off interval after a failure (doubling, with jitter).
        retry_max: Longest back-off interval.

    Example:
        >>> RemoteBudget(decide=0.1).decide
        0.1
    """

    decide: float = 0.25
    report: float = 2.0
    query: float = 10.0
    flush: float = 10.0
    exit: float = 2.0
    retry_initial: float = 0.25
    retry_max: float = 10.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValidationError(f"{name} must be a number of seconds > 0", field=name)
        if self.retry_initial > self.retry_max:
            raise ValidationError("retry_initial must not exceed retry_max", field="retry_initial")


@dataclass(frozen=True, slots=True)
class _Issued:
    goal: str
    pipeline_id: str
    path_id: str
    model_id: str
    tool_id: str | None
    params: dict[str, Any]


class RemoteIntelligence:
    """The Intelligence API over HTTP: fail-open decisions, outcomes never lost.

    Thread-safe. Methods and return values are those of :class:`~kalibr_core.Intelligence`
    (the service's JSON), with these differences: decisions made without the service carry
    ``source: "fail_open"``; ``report_outcome`` answers ``status: "queued"`` when the outcome
    is safe in the outbox but not yet acknowledged (always with ``wait=False``); queued
    corrections and registrations answer ``status: "queued"`` too. One client serves one
    tenant (its API key's).

    Args:
        url: The service's base URL (``KALIBR_INTELLIGENCE_URL``).
        api_key: The tenant's API key (``KALIBR_API_KEY``).
        tenant: The tenant (``KALIBR_TENANT_ID``).
        budget: Time budgets (defaults: 250 ms per decision, see :class:`RemoteBudget`).
        outbox: The outbox, or its file; default :func:`~kalibr_core._outbox.default_outbox_path`
            (one file per URL and tenant under ``$KALIBR_OUTBOX`` or the user data directory).
        transport: An httpx transport (tests use ``httpx.MockTransport``).
        seed: Seed of the fail-open sampling.
        snapshot_max_age_s: How old the fail-open snapshot of a goal may get while its
            decisions succeed before it is fetched again (in the background).
        tuning: Engine tuning of the fail-open sampling.

    Example:
        >>> remote = RemoteIntelligence("http://127.0.0.1:8080", "kc_...", "acme")  # doctest: +SKIP
        >>> decision = remote.decide("extract_company")  # doctest: +SKIP
        >>> trace = decision["trace_id"]  # doctest: +SKIP
        >>> remote.report_outcome(trace, "extract_company", success=True)  # doctest: +SKIP
        >>> remote.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        tenant: str = DEFAULT_TENANT,
        *,
        budget: RemoteBudget | None = None,
        outbox: Outbox | str | os.PathLike[str] | None = None,
        transport: httpx.BaseTransport | None = None,
        seed: int | None = None,
        snapshot_max_age_s: float = 30.0,
        tuning: EngineTuning | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"KALIBR_INTELLIGENCE_URL must be an http(s) URL, got {url!r}")
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigurationError(
                "KALIBR_API_KEY is not set: the intelligence service needs an API key "
                "(create one with `kalibr-core keys create --tenant TENANT`)"
            )
        if (
            isinstance(snapshot_max_age_s, bool)
            or not isinstance(snapshot_max_age_s, int | float)
            or not snapshot_max_age_s > 0
        ):
            raise ValidationError(
                f"snapshot_max_age_s must be a number of seconds > 0, got {snapshot_max_age_s!r}",
                field="snapshot_max_age_s",
            )
        self.url = url.rstrip("/")
        self.tenant = validate_goal(tenant, field_name="tenant")
        self.budget = budget or RemoteBudget()
        self.snapshot_max_age_s = float(snapshot_max_age_s)
        if isinstance(outbox, Outbox):
            self.outbox, self._owns_outbox = outbox, False
        else:
            path = default_outbox_path(self.url, self.tenant) if outbox is None else outbox
            self.outbox, self._owns_outbox = Outbox(path), True
        self._http = httpx.Client(
            base_url=self.url,
            headers={
                "X-API-Key": api_key.strip(),
                "X-Tenant-ID": self.tenant,
                "User-Agent": f"kalibr-core/{__version__}",
            },
            timeout=self.budget.query,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            transport=transport,
        )
        # Decisions run on this pool so that the caller waits for the budget, not for httpx's
        # per-phase timeouts (connect + write + read can add up to more than the budget).
        self._decider = concurrent.futures.ThreadPoolExecutor(
            max_workers=16, thread_name_prefix="kalibr-decide"
        )
        self._health = ServiceHealth(self.budget.retry_initial, self.budget.retry_max, self.url)
        self._sender = OutboxSender(
            self.outbox,
            self._post,
            self._health,
            report_s=self.budget.report,
            retry_initial=self.budget.retry_initial,
            retry_max=self.budget.retry_max,
            idle=self._refresh_snapshots,
        )
        self._fallback = FallbackRouter(self.outbox, tuning=tuning, seed=seed)
        self._issued: OrderedDict[str, _Issued] = OrderedDict()
        self._issued_lock = threading.Lock()
        self._refresh: set[tuple[str, str]] = set()
        self._refresh_lock = threading.Lock()
        self._closed = False
        self._close_lock = threading.Lock()
        _live.add(self)
        leftover = self.outbox.count()
        if leftover:
            logger.info(
                "%d request(s) from an earlier run wait in the outbox %s; replaying them",
                leftover,
                self.outbox.path,
            )
            self._kick()

    def __repr__(self) -> str:
        return f"RemoteIntelligence({self.url!r}, tenant={self.tenant!r})"

    # -- lifecycle -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Deliver the outbox now, waiting at most ``budget.flush`` seconds.

        Raises:
            IntelligenceUnavailableError: entries are still queued (the service is down or
                rejects the key); they stay in the outbox and are replayed later.
        """
        remaining = self._sender.drain_until(time.monotonic() + self.budget.flush)
        if remaining:
            raise IntelligenceUnavailableError(
                f"{remaining} request(s) still wait in the outbox {self.outbox.path} "
                f"({self._health.reason or 'the service did not acknowledge them in time'}); "
                "they are replayed when the service answers"
            )

    def pending_outcomes(self) -> int:
        """Outcomes and corrections in the outbox, not yet acknowledged by the service."""
        return self.outbox.count("report") + self.outbox.count("update")

    def close(self) -> None:
        """Stop the sender, deliver what it can within ``budget.exit``, release resources.

        What the service did not acknowledge stays in the outbox: the next client of the same
        service and tenant replays it. Idempotent.
        """
        with self._close_lock:
            if not self._closed:
                self._close()

    def _close(self) -> None:
        deadline = time.monotonic() + self.budget.exit
        self._sender.stop(deadline)
        try:
            remaining = self._sender.drain_until(deadline)
        except Exception:  # closing must finish; the outbox keeps what was not delivered
            logger.exception("delivering the outbox %s while closing failed", self.outbox.path)
            remaining = -1
        self._closed = True
        _live.discard(self)
        if remaining:
            logger.warning(
                "%s request(s) remain in the outbox %s; the next client of %s for tenant %s "
                "replays them",
                "some" if remaining < 0 else remaining,
                self.outbox.path,
                self.url,
                self.tenant,
            )
        self._sender.release()
        self._decider.shutdown(wait=False, cancel_futures=True)
        self._http.close()
        if self._owns_outbox:
            self.outbox.close()

    def __enter__(self) -> RemoteIntelligence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_tenant(self, tenant: str | None) -> None:
        if tenant is not None and tenant != self.tenant:
            raise ValidationError(
                f"this client serves tenant {self.tenant!r} (its API key's), not {tenant!r}; "
                "create one RemoteIntelligence per tenant",
                field="tenant",
            )

    # -- HTTP ----------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: float,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            return self._http.request(method, path, json=json, params=query, timeout=timeout)
        except (httpx.HTTPError, OSError) as exc:
            raise UnreachableError(
                f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
            ) from exc

    def _post(self, path: str, body: Mapping[str, Any], timeout: float) -> httpx.Response:
        return self._request("POST", path, json=body, timeout=timeout)

    def _kick(self) -> None:
        """Wake the outbox's background sender."""
        if not self._closed:
            self._sender.kick()

    def _bounded(self, path: str, body: Mapping[str, Any], budget: float) -> httpx.Response:
        """POST on the pool, waiting at most ``budget`` seconds in total.

        httpx bounds each phase (connect, write, read) on its own, which can add up to more
        than the budget; the pool lets the caller stop waiting at the budget (the request
        then ends by its own timeouts, its answer unused).
        """
        try:
            future = self._decider.submit(self._request, "POST", path, json=body, timeout=budget)
        except RuntimeError as exc:  # the pool was shut down by close()
            raise UnreachableError("the client is closed") from exc
        try:
            return future.result(timeout=budget)
        except concurrent.futures.TimeoutError:
            raise UnreachableError(f"no answer within {budget * 1000:.0f} ms") from None
        except UnreachableError:
            raise
        except Exception as exc:  # a routing-side failure must not reach the agent: fail open
            logger.exception("the request to %s%s failed unexpectedly", self.url, path)
            raise UnreachableError(f"{type(exc).__name__}: {exc}") from exc

    def _query(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        goal: str | None = None,
        not_found: type[NotFoundError] = NotFoundError,
    ) -> dict[str, Any]:
        """A read or admin call: the answer, or the error the local Intelligence would raise."""
        if self._closed:
            raise IntelligenceUnavailableError("this RemoteIntelligence is closed", goal=goal)
        try:
            response = self._request(
                method, path, json=json, params=params, timeout=self.budget.query
            )
        except UnreachableError as exc:
            self._health.failure(str(exc))
            raise IntelligenceUnavailableError(
                f"the intelligence service {self.url} did not answer: {exc}", goal=goal
            ) from exc
        status = response.status_code
        if 200 <= status < 300:
            body = json_object(response)
            if body is None:
                raise IntelligenceUnavailableError(
                    f"the intelligence service {self.url} answered {path} with a body that is "
                    "not a JSON object",
                    goal=goal,
                )
            if self._health.success():
                self._kick()
            return body
        message = error_message(response)
        if status == 404:
            raise not_found(message, goal=goal)
        if status in (401, 403):
            raise ConfigurationError(
                f"the intelligence service {self.url} refused the API key for tenant "
                f"{self.tenant!r} (HTTP {status}: {message}); check KALIBR_API_KEY and "
                "KALIBR_TENANT_ID",
                goal=goal,
            )
        if retryable(status):
            self._health.failure(f"HTTP {status}: {message}")
            raise IntelligenceUnavailableError(
                f"the intelligence service {self.url} failed (HTTP {status}: {message})",
                goal=goal,
            )
        raise ValidationError(f"the intelligence service refused the request: {message}")

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
        """Choose a path for one call of this goal; never waits longer than ``budget.decide``.

        When the service does not answer in time (or fails), the decision is made locally
        from the last snapshot of the goal's posteriors, else the first registered path
        (``reason: "fallback"``, ``source: "fail_open"``, a client-minted ``trace_id``).

        Raises:
            ValidationError: bad arguments (checked before anything is sent).
            NoPathAvailableError: the service says the goal has no path and this client
                knows none either.
            IntelligenceUnavailableError: the service is unavailable and this client knows no
                path of the goal (nothing registered through it, no snapshot).
        """
        self._check_tenant(tenant)
        goal = validate_goal(goal)
        risk = validate_risk_level(task_risk_level, field_name="task_risk_level")
        pipeline = validate_pipeline_id(pipeline_id)
        candidates = _candidates(candidate_model_ids)
        if exploration_rate is not None:
            ExplorationConfig(exploration_rate=exploration_rate)  # validates the rate
        body: dict[str, Any] = {"goal": goal, "task_risk_level": risk}
        if pipeline:
            body["pipeline_id"] = pipeline
        if candidates is not None:
            body["candidate_model_ids"] = candidates
        if exploration_rate is not None:
            body["exploration_rate"] = exploration_rate
        decision, why, no_path = self._decide_remotely(body)
        if decision is not None:
            self._remember(decision, pipeline)
            if self._fallback.wants_refresh(goal, pipeline, self.snapshot_max_age_s):
                with self._refresh_lock:
                    self._refresh.add((goal, pipeline))
                self._kick()
            return decision
        local = self._fallback.decide(goal, pipeline, risk, candidates, exploration_rate)
        if local is None:
            if no_path is not None:
                raise NoPathAvailableError(no_path, goal=goal)
            raise IntelligenceUnavailableError(
                f"no decision for goal {goal!r}: {why}, and this client knows no path of it "
                "(register the paths through it, e.g. with a Router)",
                goal=goal,
            )
        logger.debug("decision for %s failed open (%s): %s", goal, why, local["model_id"])
        self._remember(local, pipeline)
        return local

    def _decide_remotely(
        self, body: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, str, str | None]:
        """(decision, why not, the service's no-path message)."""
        if self._closed:
            return None, "the client is closed", None
        if not self._health.available():
            return None, f"the service is unavailable ({self._health.reason})", None
        try:
            response = self._bounded(_DECIDE, body, self.budget.decide)
        except UnreachableError as exc:
            self._health.failure(str(exc))
            return None, str(exc), None
        status = response.status_code
        if 200 <= status < 300:
            decision = json_object(response)
            if (
                decision is None
                or not isinstance(decision.get("trace_id"), str)
                or not isinstance(decision.get("path_id"), str)
                or not isinstance(decision.get("model_id"), str)
            ):
                why = "the service's decision is malformed"
                self._health.failure(why)
                return None, why, None
            if self._health.success():
                self._kick()
            decision.setdefault("source", "service")
            return decision, "", None
        message = error_message(response)
        if status == 404:
            if self._health.success():
                self._kick()
            return None, f"the service has no path ({message})", message
        if retryable(status):
            self._health.failure(f"HTTP {status}: {message}", auth=status in (401, 403))
            return None, f"HTTP {status}: {message}", None
        logger.error("the intelligence service refused a decision (HTTP %d: %s)", status, message)
        return None, f"HTTP {status}: {message}", None

    def _remember(self, decision: Mapping[str, Any], pipeline: str) -> None:
        tool_id = decision.get("tool_id")
        params = decision.get("params")
        issued = _Issued(
            str(decision["goal"]) if isinstance(decision.get("goal"), str) else "",
            pipeline,
            str(decision["path_id"]),
            str(decision["model_id"]),
            tool_id if isinstance(tool_id, str) else None,
            dict(params) if isinstance(params, Mapping) else {},
        )
        with self._issued_lock:
            self._issued[str(decision["trace_id"])] = issued
            if len(self._issued) > _RECENT_DECISIONS:
                self._issued.popitem(last=False)

    # -- outcomes ------------------------------------------------------------------------------
    def queue_outcome(self, trace_id: str, goal: str, **fields: Any) -> None:
        """:meth:`report_outcome` with ``wait=False`` (the Router's automatic reports).

        Validated at once here: the outbox write it ends in is the cheap part.
        """
        self.report_outcome(trace_id, goal, **fields, wait=False)

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
        tool_id: str | Sequence[str] | None = None,
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
        """Record what happened: durable in the outbox when this returns, then delivered.

        With ``wait=True`` this waits up to ``budget.report`` for the service's
        acknowledgement (``status: "accepted"``); otherwise, or when the service is down,
        it answers ``status: "queued"`` and the background sender delivers it. Either way the
        outcome is recorded exactly once (``outcome_id``, minted here unless given, is the
        service's idempotency key). The model, tools and params of a decision made by this
        client are filled in when not given, so the service can attribute outcomes of
        fail-open decisions it never saw.

        Once the outcome is queued nothing else raises (but the service's rejection), so a
        caller that retries after an error cannot queue it twice.

        Raises:
            ValidationError: bad arguments, or (``wait=True``) the service rejected the
                outcome as invalid (it is kept in the outbox's dead letters).
            StoreError: the outbox file cannot be written (disk full); nothing was queued.
        """
        self._check_tenant(tenant)
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
        key = new_trace_id() if outcome_id is None else validate_trace_id(outcome_id)
        model = _optional_text(model_id, "model_id")
        tool = _optional_tool(tool_id)
        params = validate_mapping(execution_params, "execution_params")
        pipeline = validate_pipeline_id(pipeline_id) if pipeline_id is not None else None
        cost = validate_nonnegative(cost_usd, "cost_usd")
        latency = validate_nonnegative(latency_ms, "latency_ms")
        with self._issued_lock:
            issued = self._issued.get(trace_id)
        if issued is not None and issued.goal == goal:
            if model is None:
                model, tool, params = issued.model_id, issued.tool_id, issued.params or None
            if pipeline is None:
                pipeline = issued.pipeline_id
        body: dict[str, Any] = {
            "trace_id": trace_id,
            "goal": goal,
            "success": success,
            "score": clamped,
            "failure_reason": _optional_text(failure_reason, "failure_reason"),
            "failure_category": validate_failure_category(failure_category),
            "metadata": validate_mapping(metadata, "metadata"),
            "model_id": model,
            "tool_id": tool,
            "execution_params": params,
            "cost_usd": cost,
            "latency_ms": latency,
            "input_tokens": validate_count(input_tokens, "input_tokens"),
            "output_tokens": validate_count(output_tokens, "output_tokens"),
            "pipeline_id": pipeline or None,
            "outcome_id": key,
        }
        body = {k: v for k, v in body.items() if v is not None}
        self._append("report", key, body)
        # Queued: from here on nothing may raise but the service's own rejection, or a caller
        # retrying the report (as the Router does after an error) would queue it twice.
        if issued is not None and issued.goal == goal and model == issued.model_id:
            value = clamped if clamped is not None else float(success)
            try:
                self._fallback.observe(
                    goal, issued.pipeline_id, issued.path_id, value, cost, latency
                )
            except Exception:  # the snapshot is a fallback; the outcome itself is safe
                logger.exception("folding outcome %s into the fail-open snapshot failed", key)
        answer = {"status": "queued", "trace_id": trace_id, "goal": goal, "path_id": None}
        if wait:
            acknowledged = self._wait_for(key)
            if isinstance(acknowledged, Rejected):
                raise ValidationError(
                    f"the intelligence service rejected outcome {key} of trace {trace_id} "
                    f"(HTTP {acknowledged.status}: {acknowledged.message}); it is kept in the "
                    f"dead letters of {self.outbox.path}",
                    goal=goal,
                    trace_id=trace_id,
                )
            if acknowledged is not None:
                answer = {**answer, **acknowledged, "status": "accepted"}
            else:
                self._kick()  # still queued: the sender replays it
        else:
            self._kick()
        return {**answer, "outcome_id": key}

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
        """Correct the latest outcome of (trace_id, goal); queued behind earlier outcomes.

        Waits up to ``budget.report`` for the service's answer (``updated`` or
        ``no_changes`` with ``fields_updated``); when the service is down or busy replaying,
        answers ``status: "queued"`` and the correction is delivered in order later.

        Raises:
            ValidationError: bad arguments.
            NotFoundError: the service answered that no outcome exists for the trace and goal
                (the correction is kept in the dead letters).
        """
        self._check_tenant(tenant)
        trace_id = validate_trace_id(trace_id)
        goal = validate_goal(goal)
        if success is not None and not isinstance(success, bool):
            raise ValidationError(
                f"success must be a bool, got {type(success).__name__}", field="success"
            )
        body: dict[str, Any] = {
            "trace_id": trace_id,
            "goal": goal,
            "success": success,
            "score": validate_score(score),
            "failure_reason": _optional_text(failure_reason, "failure_reason"),
            "failure_category": validate_failure_category(failure_category),
            "metadata": validate_mapping(metadata, "metadata"),
        }
        body = {k: v for k, v in body.items() if v is not None}
        key = new_trace_id()
        self._append("update", key, body)
        answer = self._wait_for(key)
        if isinstance(answer, Rejected):
            error = NotFoundError if answer.status == 404 else ValidationError
            raise error(
                f"the intelligence service rejected the update of trace {trace_id} "
                f"(HTTP {answer.status}: {answer.message})",
                goal=goal,
                trace_id=trace_id,
            )
        if answer is None:
            self._kick()
            return {"status": "queued", "trace_id": trace_id, "goal": goal, "fields_updated": []}
        return answer

    def _wait_for(self, key: str) -> dict[str, Any] | Rejected | None:
        """The service's answer to a queued entry, or None (still queued, replayed later)."""
        try:
            return self._sender.wait_for(key)
        except Exception:  # the entry is safe in the outbox: the sender delivers it later
            logger.exception("waiting for the service's answer to %s failed", key)
            return None

    def _append(self, kind: EntryKind, key: str, body: dict[str, Any]) -> None:
        if self._closed:
            raise StoreError(f"this RemoteIntelligence is closed; nothing was queued ({kind})")
        try:
            self.outbox.append(kind, key, body)
        except Exception as exc:
            raise StoreError(f"cannot write the outbox {self.outbox.path}: {exc}") from exc

    def _refresh_snapshots(self) -> None:
        with self._refresh_lock:
            wanted, self._refresh = self._refresh, set()
        for goal, pipeline in sorted(wanted):
            if self._closed or not self._health.available():
                return
            try:
                stats = self._query(
                    "GET", _STATS, params={"goal": goal, "pipeline_id": pipeline or None}, goal=goal
                )
            except KalibrError as exc:
                logger.debug("refreshing the snapshot of %s failed: %s", goal, exc)
                continue
            self._fallback.update(goal, pipeline, stats)

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
        """Register a path for a goal (idempotent; see :meth:`register_spec`)."""
        goal = validate_goal(goal)
        spec_dict: dict[str, Any] = {"model": model_id, "tools": tool_id, "params": params}
        if extra:
            spec_dict.update(extra)
        return self.register_spec(
            normalise_path(goal, spec_dict, risk_level=risk_level), tenant=tenant
        )

    def register_spec(self, spec: PathSpec, *, tenant: str | None = None) -> dict[str, Any]:
        """Register a normalised path (what Router uses).

        When the service is unavailable the registration is queued in the outbox (ahead of
        later outcomes) and the answer is computed locally, with ``created: None`` and
        ``status: "queued"``; the path is the fail-open fallback of its goal meanwhile.
        """
        self._check_tenant(tenant)
        self._fallback.remember(spec)
        body: dict[str, Any] = {
            "goal": spec.goal,
            "model_id": spec.model_id,
            "params": dict(spec.params),
            "risk_level": spec.risk_level,
        }
        if spec.tools:
            body["tool_id"] = spec.tools[0] if len(spec.tools) == 1 else list(spec.tools)
        if self._health.available() and not self._closed:
            try:
                response = self._bounded(_PATHS, body, self.budget.report)
            except UnreachableError as exc:
                self._health.failure(str(exc))
            else:
                status = response.status_code
                answer = json_object(response)
                if 200 <= status < 300 and answer is not None and "path_id" in answer:
                    if self._health.success():
                        self._kick()
                    if answer["path_id"] != spec.path_id:
                        logger.warning(
                            "the service registered %s of %s as %s, this client as %s",
                            spec.model_id,
                            spec.goal,
                            answer["path_id"],
                            spec.path_id,
                        )
                    return answer
                message = error_message(response)
                if not retryable(status) and status >= 400:
                    raise ValidationError(
                        f"the intelligence service refused path {spec.model_id!r} of goal "
                        f"{spec.goal!r} (HTTP {status}: {message})",
                        goal=spec.goal,
                    )
                self._health.failure(f"HTTP {status}: {message}", auth=status in (401, 403))
        self._append("register", f"register-{spec.path_id}", body)
        self._kick()
        return {
            "path_id": spec.path_id,
            "goal": spec.goal,
            "model_id": spec.model_id,
            "tool_id": spec.tool_id,
            "params": dict(spec.params),
            "risk_level": spec.risk_level,
            "enabled": True,
            "created": None,
            "status": "queued",
        }

    def list_paths(
        self, goal: str | None = None, include_disabled: bool = False, *, tenant: str | None = None
    ) -> dict[str, Any]:
        """The registered paths (of one goal if given)."""
        self._check_tenant(tenant)
        if goal is not None:
            goal = validate_goal(goal)
        params = {"goal": goal, "include_disabled": "true" if include_disabled else "false"}
        return self._query("GET", _PATHS, params=params, goal=goal)

    def disable_path(self, path_id: str, *, tenant: str | None = None) -> dict[str, Any]:
        """Soft-delete a path. Raises NotFoundError."""
        self._check_tenant(tenant)
        return self._query("DELETE", f"{_PATHS}/{_path_segment(path_id)}")

    def enable_path(self, path_id: str, *, tenant: str | None = None) -> dict[str, Any]:
        """Re-enable a disabled path. Raises NotFoundError."""
        self._check_tenant(tenant)
        return self._query("POST", f"{_PATHS}/{_path_segment(path_id)}/enable")

    # -- exploration config --------------------------------------------------------------------
    def get_exploration_config(self, goal: str, *, tenant: str | None = None) -> dict[str, Any]:
        """The goal's exploration config (defaults when never set)."""
        self._check_tenant(tenant)
        goal = validate_goal(goal)
        return self._query("GET", _CONFIG, params={"goal": goal}, goal=goal)

    def set_exploration_config(
        self, goal: str, *, tenant: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Change some exploration settings of a goal (others keep their value)."""
        self._check_tenant(tenant)
        goal = validate_goal(goal)
        ExplorationConfig.from_dict({k: None for k in fields})  # unknown keys
        ExplorationConfig.from_dict(dict(fields))  # the values given
        return self._query("POST", _CONFIG, json={"goal": goal, **fields}, goal=goal)

    # -- deterministic views -------------------------------------------------------------------
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
        """The best path for a goal, deterministically. Raises NotFoundError without data."""
        self._check_tenant(tenant)
        goal = validate_goal(goal)
        limits = {k: v for k, v in _constraint_args(constraints).items() if v is not None}
        body: dict[str, Any] = {
            "goal": goal,
            "constraints": limits or None,
            "window_hours": None if window_hours is None else _window(window_hours),
            "pipeline_id": validate_pipeline_id(pipeline_id) or None,
            "include_tools": bool(include_tools),
            "include_params": None if include_params is None else list(include_params),
            "task_type": task_type,
        }
        return self._query("POST", _POLICY, json=body, goal=goal)

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
        """The next best path after excluding models. Raises NoPathAvailableError."""
        self._check_tenant(tenant)
        goal = validate_goal(goal)
        excluded = _candidates(exclude_models, field_name="exclude_models", allow_empty=True)
        if excluded is None:
            raise ValidationError(
                "exclude_models must be a list of model ids", field="exclude_models"
            )
        limits = {k: v for k, v in _constraint_args(constraints).items() if v is not None}
        body: dict[str, Any] = {
            "goal": goal,
            "exclude_models": excluded,
            "constraints": limits or None,
            "window_hours": None if window_hours is None else _window(window_hours),
            "pipeline_id": validate_pipeline_id(pipeline_id) or None,
            "task_type": task_type,
        }
        return self._query(
            "POST", _ALTERNATIVE, json=body, goal=goal, not_found=NoPathAvailableError
        )

    def stats(
        self, goal: str, *, pipeline_id: str | None = None, tenant: str | None = None
    ) -> dict[str, Any]:
        """Goal-level routing statistics (also refreshes the goal's fail-open snapshot)."""
        self._check_tenant(tenant)
        goal = validate_goal(goal)
        pipeline = validate_pipeline_id(pipeline_id)
        answer = self._query(
            "GET", _STATS, params={"goal": goal, "pipeline_id": pipeline or None}, goal=goal
        )
        self._fallback.update(goal, pipeline, answer)
        return answer

    def get_insights(
        self, goal: str | None = None, window_hours: float = 168, *, tenant: str | None = None
    ) -> dict[str, Any]:
        """Structured diagnostics per goal (schema_version "1.0")."""
        self._check_tenant(tenant)
        if goal is not None:
            goal = validate_goal(goal)
        params = {"goal": goal, "window_hours": _window(window_hours)}
        return self._query("GET", _INSIGHTS, params=params, goal=goal)


def _path_segment(path_id: object) -> str:
    if not isinstance(path_id, str) or not path_id:
        raise ValidationError("path_id must be a non-empty string", field="path_id")
    return urllib.parse.quote(path_id, safe="")


_live: weakref.WeakSet[RemoteIntelligence] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Deliver what each client can within its exit budget; the rest stays in its outbox."""
    for remote in list(_live):
        try:
            remote.close()
        except Exception:  # at exit, one failing client must not stop the others
            logger.exception("closing %r at exit failed", remote)


__all__ = ["RemoteBudget", "RemoteIntelligence"]

"""Router: routed completions through the real provider SDKs, and the outcomes they teach.

For every call: a routed decision (Thompson sampling over this goal's outcomes), a direct call
to the chosen provider (kalibr is not a proxy), then the outcome, reported automatically by
``success_when`` / ``score_when`` or by the caller with :meth:`Router.report`.

Thread and async safety (beyond the spec, which says a Router is not thread-safe): every call
gets its own trace. ``report()`` without a ``trace_id`` reports the calls made *in the current
thread or asyncio task* since its last report; every response also carries
``kalibr_trace_id`` for an explicit ``report(trace_id=...)`` from anywhere.

Fail-open: if the intelligence backend raises, the call proceeds on the first path and the
agent never sees a routing error. Outcomes that cannot be stored are kept and retried on the
next report and on :meth:`Router.flush` (and logged), never dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kalibr_core._domain import (
    PathSpec,
    new_trace_id,
    normalise_path,
    validate_failure_category,
    validate_goal,
    validate_pipeline_id,
    validate_score,
    validate_trace_id,
)
from kalibr_core._errors import (
    ConfigurationError,
    KalibrError,
    NotFoundError,
    ProviderError,
    ValidationError,
)
from kalibr_core.router import _modalities
from kalibr_core.router._chat import (
    ACHAT,
    ASTREAM,
    CHAT,
    STREAM,
    ChatResult,
    StreamAccumulator,
    StreamPiece,
)
from kalibr_core.router._outcomes import Trace, TraceBook, classify_error, config_failure
from kalibr_core.router._pricing import token_cost
from kalibr_core.router._providers import ClientCache, ProviderTarget, resolve_provider
from kalibr_core.router._tools import DEFAULT_TOOLS, ToolRegistry
from kalibr_core.router._types import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceDelta,
    ChunkChoice,
    Message,
    SpeechResult,
    TranscriptionResult,
    Usage,
    construct,
)

if TYPE_CHECKING:
    from kalibr_core._api import IntelligenceBackend

logger = logging.getLogger("kalibr_core.router")

SuccessFn = Callable[[str], bool]
ScoreFn = Callable[[str], float]
_SHARED_CLIENTS = ClientCache()


class _LiveRouters:
    """The Routers alive in this process, held weakly, to find the one that issued a trace.

    Code that holds only a response (a framework's output parser or callback handler) reports
    against the call that produced it through :func:`router_for_trace`.
    """

    def __init__(self) -> None:
        self._routers: weakref.WeakSet[Router] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, router: Router) -> None:
        with self._lock:
            self._routers.add(router)

    def issuer(self, trace_id: str) -> Router | None:
        with self._lock:
            routers = list(self._routers)
        return next((r for r in routers if r._book.get(trace_id) is not None), None)


_LIVE_ROUTERS = _LiveRouters()


def router_for_trace(trace_id: str) -> Router | None:
    """The Router of this process that issued ``trace_id`` (None if unknown or evicted).

    For code that holds a response but not the Router, such as a framework's output parser:
    ``router_for_trace(tid).report(success, trace_id=tid)`` reports exactly that call.
    """
    return _LIVE_ROUTERS.issuer(trace_id)


class Router:
    """Routes each call of one goal to the path that works, and learns from the outcome.

    Args:
        goal: The goal (a task with a consistent success criterion).
        paths: Model strings or dicts ``{"model", "tools", "params"}``; optional ``provider``,
            ``base_url``, ``api_key_env`` and ``pricing`` keys tell how to call it. The first
            path is the fail-open fallback: put the most reliable one first.
        success_when: ``f(output_text) -> bool``; reports every completion automatically.
        score_when: ``f(output_text) -> float`` in [0, 1] (clamped); wins over success_when;
            success is ``score >= 0.5``.
        exploration_rate: None lets the engine explore automatically; a number adds that
            share of uniform exploration to this router's decisions.
        auto_register: Register the paths with the intelligence on creation (idempotent).
        session_id: Recorded with every outcome (default ``$KALIBR_SESSION_ID``).
        prefer_cached: Accepted for forward compatibility; it does not change decisions yet.
        pipeline_id: Scope learning to this pipeline (unrelated agents sharing a goal do not
            bleed into each other).
        intelligence: The Intelligence to use (default: the process-wide one).
        tools: The tool registry resolving tool names (default: the global one).
        durable_reports: Wait until each outcome is durable before returning. By default
            outcomes go to the Intelligence's background writer (stored in batches within its
            ``outcome_delay_s``, 20 ms by default; by :meth:`flush` and at exit), so routing
            adds almost no latency.

    Example:
        >>> router = Router(goal="extract_company", paths=["gpt-4o", "claude-sonnet-4-20250514"],
        ...                 success_when=lambda out: "company" in out)  # doctest: +SKIP
        >>> response = router.completion([{"role": "user", "content": "..."}])  # doctest: +SKIP
        >>> response.choices[0].message.content  # doctest: +SKIP
    """

    def __init__(
        self,
        goal: str,
        paths: Sequence[str | Mapping[str, Any]],
        success_when: SuccessFn | None = None,
        score_when: ScoreFn | None = None,
        exploration_rate: float | None = None,
        auto_register: bool = True,
        session_id: str | None = None,
        prefer_cached: bool = False,
        pipeline_id: str | None = None,
        *,
        intelligence: IntelligenceBackend | None = None,
        tools: ToolRegistry | None = None,
        durable_reports: bool = False,
    ) -> None:
        self.goal = validate_goal(goal)
        if isinstance(paths, str | bytes) or not isinstance(paths, Sequence) or not paths:
            raise ValidationError(
                "paths must be a non-empty list of models or path dicts",
                field="paths",
                goal=self.goal,
            )
        specs = [normalise_path(self.goal, p) for p in paths]
        seen: set[str] = set()
        for spec in specs:
            if spec.path_id in seen:
                raise ValidationError(
                    f"duplicate path {spec.model_id!r} for goal {goal!r}",
                    field="paths",
                    goal=self.goal,
                )
            seen.add(spec.path_id)
        for name, fn in (("success_when", success_when), ("score_when", score_when)):
            if fn is not None and not callable(fn):
                raise ValidationError(f"{name} must be callable", field=name, goal=self.goal)
        if exploration_rate is not None and (
            isinstance(exploration_rate, bool)
            or not isinstance(exploration_rate, int | float)
            or not 0.0 <= exploration_rate <= 1.0
        ):
            raise ValidationError(
                "exploration_rate must be between 0 and 1", field="exploration_rate", goal=self.goal
            )
        self.paths: list[PathSpec] = specs
        self.success_when = success_when
        self.score_when = score_when
        self.exploration_rate = exploration_rate
        self.session_id = session_id or os.environ.get("KALIBR_SESSION_ID") or None
        self.prefer_cached = bool(prefer_cached)
        self.durable_reports = bool(durable_reports)
        self.pipeline_id = validate_pipeline_id(pipeline_id) or None
        self._intel_override = intelligence
        self._tools = tools or DEFAULT_TOOLS
        self._clients = _SHARED_CLIENTS
        self._book = TraceBook()
        self._unsent: list[dict[str, Any]] = []
        self._unsent_lock = threading.Lock()
        self._by_id = {s.path_id: s for s in specs}
        self._models = list(dict.fromkeys(s.model_id for s in specs))
        self._auto_register = bool(auto_register)
        self._registered = False
        if auto_register:
            self._register()
        _LIVE_ROUTERS.add(self)

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def intelligence(self) -> IntelligenceBackend:
        """The Intelligence this router decides with and reports to."""
        if self._intel_override is not None:
            return self._intel_override
        from kalibr_core._api import get_intelligence

        return get_intelligence()

    def _register(self) -> None:
        try:
            for spec in self.paths:
                self.intelligence.register_spec(spec)
        except Exception as exc:  # fail open: routing still works on the first path
            logger.warning("registering the paths of %s failed (%s); continuing", self.goal, exc)
        else:
            self._registered = True

    def _ensure_registered(self) -> None:
        # Paths the backend could not take at creation are registered once it answers again;
        # until then it knows no path of this goal, so routing would stay on the first path
        # and outcomes would be stored without one.
        if self._auto_register and not self._registered:
            self._register()

    def _begin(self, force_model: str | None) -> Trace:
        """Decide (or honour force_model), failing open to the first path."""
        if force_model is not None:
            if not isinstance(force_model, str) or not force_model:
                raise ValidationError(
                    "force_model must be a model string", field="force_model", goal=self.goal
                )
            spec = next((s for s in self.paths if s.model_id == force_model), None)
            if spec is None:
                spec = normalise_path(self.goal, force_model)
            trace = Trace(
                new_trace_id(), spec, spec.path_id if spec in self.paths else None, "forced"
            )
        else:
            trace = self._decide()
        self._book.add(trace)
        return trace

    def _decide(self) -> Trace:
        self._ensure_registered()
        started = time.perf_counter()
        try:
            decision = self.intelligence.decide(
                self.goal,
                candidate_model_ids=self._models,
                pipeline_id=self.pipeline_id,
                exploration_rate=self.exploration_rate,
            )
        except Exception as exc:  # fail open: a routing failure never reaches the agent
            logger.warning(
                "routing decision for %s failed after %.1f ms (%s: %s); using the first path",
                self.goal,
                (time.perf_counter() - started) * 1000,
                type(exc).__name__,
                exc,
            )
            first = self.paths[0]
            return Trace(new_trace_id(), first, first.path_id, "fail_open")
        spec = self._by_id.get(decision["path_id"])
        if spec is None:  # a path of this goal registered elsewhere, with the same model
            spec = normalise_path(
                self.goal,
                {
                    "model": decision["model_id"],
                    "tools": decision["tool_id"].split(",") if decision["tool_id"] else None,
                    "params": decision["params"],
                },
            )
        return Trace(decision["trace_id"], spec, decision["path_id"], decision["reason"])

    def _prepare(
        self, trace: Trace, max_tokens: int | None, kwargs: dict[str, Any]
    ) -> tuple[ProviderTarget, dict[str, Any]]:
        spec = trace.path
        target = resolve_provider(spec.model_id, spec.extra)
        trace.provider = target.provider
        params: dict[str, Any] = {**spec.params, **kwargs}
        if max_tokens is not None:  # checked by the caller, before deciding
            params["max_tokens"] = max_tokens
        if "tools" not in kwargs and spec.tools:
            params["tools"] = self._tools.resolve(
                spec.tools, spec.extra.get("tool_definitions", ())
            )
        return target, params

    # -- completion ----------------------------------------------------------------------------
    def completion(
        self,
        messages: Sequence[Mapping[str, Any]],
        force_model: str | None = None,
        max_tokens: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """A routed chat completion (OpenAI-format messages, OpenAI-shaped response).

        Args:
            messages: OpenAI-format messages.
            force_model: Use this model, bypassing routing (multi-turn conversations); the
                outcome is still recorded.
            max_tokens: Maximum tokens of the answer.
            **kwargs: Passed to the provider (``temperature``, ``tools``, ``stream``...);
                they win over the path's ``params``.

        Returns:
            A :class:`ChatCompletion`, or with ``stream=True`` a :class:`RoutedStream` of
            :class:`ChatCompletionChunk` whose outcome is evaluated when the stream ends.

        Raises:
            ProviderError: the provider call failed (already reported as a failure; the SDK's
                exception is chained). Routing failures never raise.
            ConfigurationError: the path's provider has no API key or a tool is unknown.
        """
        _check_messages(messages, self.goal)
        _check_max_tokens(max_tokens, self.goal)
        stream = bool(kwargs.pop("stream", False))
        trace = self._begin(force_model)
        target, params = self._prepare_or_fail(trace, max_tokens, kwargs)
        client = self._client_or_fail(trace, target, is_async=False)
        if stream:
            return RoutedStream(self, trace, STREAM[target.sdk](client, target, messages, params))
        started = time.perf_counter()
        try:
            result = CHAT[target.sdk](client, target, messages, params)
        except ValidationError:
            self._book.claim(trace, "invalid request")  # the caller's input, not the path's
            raise
        except Exception as exc:
            raise self._provider_failure(trace, exc, started) from exc
        return self._finish(trace, result, started, target)

    async def acompletion(
        self,
        messages: Sequence[Mapping[str, Any]],
        force_model: str | None = None,
        max_tokens: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Async form of :meth:`completion` (``stream=True`` gives an async iterator)."""
        _check_messages(messages, self.goal)
        _check_max_tokens(max_tokens, self.goal)
        stream = bool(kwargs.pop("stream", False))
        trace = self._begin(force_model)
        target, params = self._prepare_or_fail(trace, max_tokens, kwargs)
        client = self._client_or_fail(trace, target, is_async=True)
        if stream:
            return AsyncRoutedStream(
                self, trace, ASTREAM[target.sdk](client, target, messages, params)
            )
        started = time.perf_counter()
        try:
            result = await ACHAT[target.sdk](client, target, messages, params)
        except ValidationError:
            self._book.claim(trace, "invalid request")  # the caller's input, not the path's
            raise
        except Exception as exc:
            error = self._measure_failure(trace, exc, started)
            await asyncio.to_thread(self._record, trace, False, None, error[0], str(exc)[:1000])
            raise error[1] from exc
        return await asyncio.to_thread(self._finish, trace, result, started, target)

    def _prepare_or_fail(
        self, trace: Trace, max_tokens: int | None, kwargs: dict[str, Any]
    ) -> tuple[ProviderTarget, dict[str, Any]]:
        try:
            return self._prepare(trace, max_tokens, kwargs)
        except ConfigurationError as exc:
            category, _ = config_failure(exc)
            self._record(trace, False, None, category, str(exc))
            raise

    def _client_or_fail(self, trace: Trace, target: ProviderTarget, *, is_async: bool) -> Any:
        try:
            return self._clients.get(target, is_async=is_async)
        except ConfigurationError as exc:
            category, _ = config_failure(exc)
            self._record(trace, False, None, category, str(exc))
            exc.goal, exc.trace_id = self.goal, trace.trace_id
            raise

    def _measure_failure(
        self, trace: Trace, exc: BaseException, started: float
    ) -> tuple[str, ProviderError]:
        trace.latency_ms = (time.perf_counter() - started) * 1000
        category, cls = classify_error(exc)
        error = cls(
            f"{trace.provider} call to {trace.path.model_id} failed ({category}): {exc}",
            goal=self.goal,
            trace_id=trace.trace_id,
            model_id=trace.path.model_id,
        )
        return category, error

    def _provider_failure(self, trace: Trace, exc: BaseException, started: float) -> ProviderError:
        category, error = self._measure_failure(trace, exc, started)
        self._record(trace, False, None, category, str(exc)[:1000])
        return error

    def _finish(
        self, trace: Trace, result: ChatResult, started: float, target: ProviderTarget
    ) -> ChatCompletion:
        trace.latency_ms = (time.perf_counter() - started) * 1000
        trace.input_tokens, trace.output_tokens = result.prompt_tokens, result.completion_tokens
        trace.cost_usd = token_cost(
            trace.path.model_id,
            result.prompt_tokens,
            result.completion_tokens,
            trace.path.extra.get("pricing"),
        )
        # construct(): model_construct without its per-field loop (trusted values, every field).
        message = construct(
            Message,
            {"role": "assistant", "content": result.content, "tool_calls": result.tool_calls},
        )
        choice = construct(
            Choice, {"index": 0, "message": message, "finish_reason": result.finish_reason}
        )
        usage = construct(
            Usage,
            {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
        )
        response = construct(
            ChatCompletion,
            {
                "id": result.id,
                "object": "chat.completion",
                "created": result.created or int(time.time()),
                "model": result.model or target.model,
                "choices": [choice],
                "usage": usage,
                "kalibr_trace_id": trace.trace_id,
                "kalibr_path_id": trace.path_id,
                "kalibr_provider": target.provider,
                "kalibr_cost_usd": trace.cost_usd,
                "kalibr_latency_ms": round(trace.latency_ms, 3),
                "kalibr_decision": trace.reason,
            },
        )
        self._evaluate(trace, result.content or "", bool(result.tool_calls))
        return response

    def _evaluate(self, trace: Trace, output: str, has_tool_calls: bool) -> None:
        """Report automatically with score_when / success_when, or for an empty output.

        A turn that only calls tools is an intermediate step of a tool loop: it is not judged
        on its own; the turn that answers is, and its outcome covers the earlier tool turns of
        the same path in this thread/task.
        """
        empty = not output.strip() and not has_tool_calls
        if has_tool_calls and not output.strip():
            return
        if self.score_when is not None or self.success_when is not None or empty:
            self._book.cover_earlier(trace)
        if self.score_when is not None:
            score = validate_score(float(self.score_when(output)))
            assert score is not None
            success = score >= 0.5
            category = None if success else ("empty_response" if empty else "validation_failed")
            self._record(
                trace, success, score, category, None if success else f"score_when gave {score:.3f}"
            )
        elif self.success_when is not None:
            success = bool(self.success_when(output))
            category = None if success else ("empty_response" if empty else "validation_failed")
            self._record(
                trace, success, None, category, None if success else "success_when returned False"
            )
        elif empty:
            self._record(trace, False, None, "empty_response", "the model returned no content")

    # -- reporting -----------------------------------------------------------------------------
    def report(
        self,
        success: bool,
        reason: str | None = None,
        score: float | None = None,
        failure_category: str | None = None,
        trace_id: str | None = None,
        *,
        trace_ids: Sequence[str] | None = None,
    ) -> None:
        """Report the outcome of this context's calls since its last report (or of one trace).

        A conversation of several calls (``force_model`` turns) gets one outcome per path
        used. A second report for the same call logs a warning and is ignored.

        Args:
            success: Whether the calls achieved the goal.
            reason: Why not (free text, trimmed to 4096 characters).
            score: Quality in [0, 1] (clamped).
            failure_category: One of ``FAILURE_CATEGORIES``.
            trace_id: Report exactly this call instead (from any thread or task).
            trace_ids: Report these calls as one episode instead: a unit of work that a
                framework adapter tracked across threads and tasks (one LlamaIndex query, say).
                One outcome per path used; calls already reported keep their outcome, and a
                group with none left is ignored without a warning, since the adapter cannot
                know which calls ``success_when`` or a failure already judged.

        Raises:
            ValidationError: bad arguments (an unknown failure_category lists the valid ones).
            KalibrError: report() before any completion in this thread/task.
            NotFoundError: ``trace_id`` (or one of ``trace_ids``) was not issued by this router.
        """
        if not isinstance(success, bool):
            raise ValidationError("success must be a bool", field="success", goal=self.goal)
        clamped = validate_score(score)
        category = validate_failure_category(failure_category)
        if reason is not None and not isinstance(reason, str):
            raise ValidationError("reason must be a string", field="reason", goal=self.goal)
        if trace_ids is not None:
            if trace_id is not None:
                raise ValidationError(
                    "pass trace_id or trace_ids, not both", field="trace_ids", goal=self.goal
                )
            traces = [trace for trace in self._issued(trace_ids) if not trace.reported]
            if not traces:
                logger.info("the calls %s of %s were already reported", trace_ids, self.goal)
                return
        elif trace_id is not None:
            trace = self._book.get(validate_trace_id(trace_id))
            if trace is None:
                raise NotFoundError(
                    f"trace {trace_id!r} was not issued by this router (or is too old)",
                    goal=self.goal,
                    trace_id=trace_id,
                )
            traces = [trace]
        else:
            episode = self._book.episode()
            self._book.end_episode()
            if not episode and not self._book.has_history():
                raise KalibrError(
                    "report() called before any completion() in this thread/task: call "
                    "completion() first, or pass trace_id=response.kalibr_trace_id",
                    goal=self.goal,
                )
            # Calls already reported (automatically, as failures, or by trace_id) keep their
            # outcome; a report that covers no other call is a second report, and is ignored.
            traces = [trace for trace in episode if not trace.reported]
            if not traces:
                message = (
                    f"the calls of goal {self.goal} in this thread/task were already reported; "
                    "this report is ignored"
                )
                warnings.warn(message, UserWarning, stacklevel=2)
                logger.warning(message)
                return
        firsts: dict[str, Trace] = {}
        for trace in traces:
            firsts.setdefault(trace.path.path_id, trace)
        for trace in firsts.values():
            self._record(trace, success, clamped, category, reason, explicit=True)
        for trace in traces:
            if trace not in firsts.values():
                self._book.claim(trace, "covered")

    def _issued(self, trace_ids: Sequence[str]) -> list[Trace]:
        if isinstance(trace_ids, str | bytes) or not isinstance(trace_ids, Sequence):
            raise ValidationError(
                "trace_ids must be a list of trace ids", field="trace_ids", goal=self.goal
            )
        traces = []
        for trace_id in dict.fromkeys(trace_ids):
            trace = self._book.get(validate_trace_id(trace_id))
            if trace is None:
                raise NotFoundError(
                    f"trace {trace_id!r} was not issued by this router (or is too old)",
                    goal=self.goal,
                    trace_id=trace_id,
                )
            traces.append(trace)
        return traces

    def _record(
        self,
        trace: Trace,
        success: bool,
        score: float | None,
        category: str | None,
        reason: str | None,
        *,
        explicit: bool = False,
    ) -> None:
        if not self._book.claim(trace, "success" if success else "failure"):
            message = (
                f"trace {trace.trace_id} of goal {self.goal} was already reported "
                f"({trace.outcome}); this report is ignored"
            )
            if explicit:
                warnings.warn(message, UserWarning, stacklevel=3)
            logger.warning(message)
            return
        if reason is not None and len(reason) > 4096:
            reason = reason[:4093] + "..."  # keep the outcome; trim the free text
        metadata: dict[str, Any] = {"provider": trace.provider, "decision": trace.reason}
        if self.session_id:
            metadata["session_id"] = self.session_id
        outcome = {
            "trace_id": trace.trace_id,
            "goal": self.goal,
            "success": success,
            "score": score,
            "failure_reason": reason,
            "failure_category": category,
            "metadata": metadata,
            "model_id": trace.path.model_id,
            "tool_id": trace.path.tool_id,
            "execution_params": dict(trace.path.params) or None,
            "cost_usd": _finite(trace.cost_usd),
            "latency_ms": _finite(trace.latency_ms),
            "input_tokens": trace.input_tokens,
            "output_tokens": trace.output_tokens,
            "pipeline_id": self.pipeline_id,
        }
        self._send([outcome])

    def _send(self, outcomes: list[dict[str, Any]]) -> None:
        self._ensure_registered()
        if self._unsent:  # earlier outcomes the backend could not take go first
            with self._unsent_lock:
                pending, self._unsent = [*self._unsent, *outcomes], []
        else:
            pending = outcomes
        intelligence = self.intelligence
        for index, outcome in enumerate(pending):
            try:
                if self.durable_reports:
                    intelligence.report_outcome(**outcome, wait=True)
                else:
                    # Every field was built or checked here (report() validates its
                    # arguments): the background writer checks and attributes it, off the
                    # caller's return path.
                    intelligence.queue_outcome(**outcome)
            except ValidationError:
                logger.exception("outcome %s rejected as invalid", outcome["trace_id"])
            except Exception as exc:  # keep it and retry: outcomes are never dropped silently
                logger.error(
                    "storing outcome %s of %s failed (%s); %d outcome(s) kept for retry",
                    outcome["trace_id"],
                    self.goal,
                    exc,
                    len(pending) - index,
                )
                with self._unsent_lock:
                    self._unsent = pending[index:] + self._unsent
                return

    def flush(self) -> int:
        """Store every outcome now; returns how many are still pending (backend down).

        Retries outcomes the backend refused earlier, then flushes the Intelligence's queue.
        """
        self._send([])
        try:
            self.intelligence.flush()
        except KalibrError as exc:
            logger.error("flushing the outcomes of %s failed: %s", self.goal, exc)
        with self._unsent_lock:
            return len(self._unsent) + self.intelligence.pending_outcomes()

    # -- other modalities (implemented in _modalities.py) ---------------------------------------
    def execute(self, task: str, input_data: Any, **kwargs: Any) -> Any:
        """A routed HuggingFace task (``InferenceClient``), with the same outcome loop.

        Every path is a HuggingFace model id. With ``HF_BASE_URL`` (a deployment of the
        HuggingFace inference router layout) the call goes to
        ``{HF_BASE_URL}/models/{model}/pipeline/{task}``; without it ``huggingface_hub``
        resolves the bare model id online.

        Args:
            task: One of :data:`HF_TASKS` (``"summarization"``, ``"text_to_image"``...).
            input_data: A text (text tasks; a list of texts for ``feature_extraction``),
                messages or a prompt (``chat_completion``), ``{"table", "query"}``
                (``table_question_answering``), or bytes / a file path / a URL (audio and
                image tasks; a PIL image too for image tasks).
            **kwargs: ``force_model``, or keyword arguments of the ``InferenceClient`` method
                (they win over the path's ``params``).

        Returns:
            The SDK's native result (``SummarizationOutput``, a PIL image, a numpy array, a
            list of labels...). ``success_when`` / ``score_when`` get a text form of it, per
            task as listed in ``kalibr_core.router._modalities`` (the text answer, or the
            result as JSON); report manually with :meth:`report` (this thread's calls).

        Raises:
            ValidationError: unknown task (the message lists the 17), bad input or keyword;
                nothing is routed.
            ConfigurationError: a path is not a HuggingFace model, or the SDK is missing.
            ProviderError: the provider call failed (reported; the SDK error is chained).
        """
        return _modalities.execute(self, task, input_data, kwargs)

    async def aexecute(self, task: str, input_data: Any, **kwargs: Any) -> Any:
        """Async form of :meth:`execute` (``huggingface_hub.AsyncInferenceClient``)."""
        return await _modalities.aexecute(self, task, input_data, kwargs)

    def synthesize(self, text: str, voice: str = "alloy", **kwargs: Any) -> SpeechResult:
        """Routed text-to-speech: OpenAI TTS, ElevenLabs, Deepgram Aura or HuggingFace.

        Args:
            text: The text to speak.
            voice: The voice (OpenAI's names; an ElevenLabs voice id). A path's
                ``params["voice"]`` wins, since voices are provider-specific.
            **kwargs: ``force_model``, or arguments of the provider's call
                (``response_format``, ``speed``, ElevenLabs ``output_format``...).

        Returns:
            A :class:`SpeechResult` (``audio`` bytes, ``format``, ``cost_usd`` from the
            characters spoken, ``kalibr_trace_id``). ``success_when`` / ``score_when`` get
            ``{"format", "bytes", "characters"}`` as JSON (``""`` for no audio).

        Raises:
            ValidationError: empty text or voice; nothing is routed.
            ConfigurationError: a path needs ``kalibr-core[voice]``, or a key is missing.
            ProviderError: the provider call failed (reported; the SDK error is chained).
        """
        return _modalities.synthesize(self, text, voice, kwargs)

    async def asynthesize(self, text: str, voice: str = "alloy", **kwargs: Any) -> SpeechResult:
        """Async form of :meth:`synthesize`."""
        return await _modalities.asynthesize(self, text, voice, kwargs)

    def transcribe(
        self,
        audio: bytes | str | os.PathLike[str],
        audio_duration_seconds: float | None = None,
        **kwargs: Any,
    ) -> TranscriptionResult:
        """Routed speech-to-text: OpenAI Whisper / gpt-4o-transcribe, Deepgram Nova or HF.

        Args:
            audio: Audio bytes or the path of an audio file.
            audio_duration_seconds: The audio's length, for the cost estimate (default: the
                duration the provider reports, if any).
            **kwargs: ``force_model``, or arguments of the provider's call (``language``,
                ``prompt``, ``response_format``...).

        Returns:
            A :class:`TranscriptionResult`; ``success_when`` / ``score_when`` get its text.

        Raises:
            ValidationError: audio is not bytes or a file path, or is empty; nothing is routed.
            ConfigurationError: a path needs ``kalibr-core[voice]``, or a key is missing.
            ProviderError: the provider call failed (reported; the SDK error is chained).
        """
        return _modalities.transcribe(self, audio, audio_duration_seconds, kwargs)

    async def atranscribe(
        self,
        audio: bytes | str | os.PathLike[str],
        audio_duration_seconds: float | None = None,
        **kwargs: Any,
    ) -> TranscriptionResult:
        """Async form of :meth:`transcribe`."""
        return await _modalities.atranscribe(self, audio, audio_duration_seconds, kwargs)

    # -- integrations --------------------------------------------------------------------------
    def as_langchain(self, **kwargs: Any) -> Any:
        """A LangChain chat model routed by this router (needs ``langchain-kalibr``)."""
        try:
            from langchain_kalibr import ChatKalibr  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigurationError(
                "as_langchain() needs the LangChain adapter: pip install langchain-kalibr"
            ) from exc
        return ChatKalibr(router=self, **kwargs)


class RoutedStream:
    """A routed streaming completion: iterate for chunks; the outcome is evaluated at the end.

    Attributes:
        trace_id: The trace of this call (also on every chunk as ``kalibr_trace_id``).
    """

    def __init__(self, router: Router, trace: Trace, pieces: Iterator[StreamPiece]) -> None:
        self._router = router
        self._trace = trace
        self._pieces = pieces
        self._acc = StreamAccumulator()
        self._started = time.perf_counter()
        self._done = False
        self.trace_id = trace.trace_id

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        try:
            for piece in self._pieces:
                self._acc.add(piece)
                yield _chunk(piece, self._trace, self._acc)
        except GeneratorExit:
            raise
        except Exception as exc:
            raise self._router._provider_failure(self._trace, exc, self._started) from exc
        self._complete()

    def _complete(self) -> None:
        if self._done:
            return
        self._done = True
        acc, trace, router = self._acc, self._trace, self._router
        trace.latency_ms = (time.perf_counter() - self._started) * 1000
        trace.input_tokens, trace.output_tokens = acc.prompt_tokens, acc.completion_tokens
        trace.cost_usd = token_cost(
            trace.path.model_id,
            acc.prompt_tokens,
            acc.completion_tokens,
            trace.path.extra.get("pricing"),
        )
        router._evaluate(trace, acc.content, bool(acc.calls))

    @property
    def content(self) -> str:
        """The text streamed so far."""
        return self._acc.content

    def __enter__(self) -> RoutedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        close = getattr(self._pieces, "close", None)
        if callable(close):
            close()


class AsyncRoutedStream:
    """Async form of :class:`RoutedStream`."""

    def __init__(self, router: Router, trace: Trace, pieces: AsyncIterator[StreamPiece]) -> None:
        self._router = router
        self._trace = trace
        self._pieces = pieces
        self._acc = StreamAccumulator()
        self._started = time.perf_counter()
        self.trace_id = trace.trace_id

    async def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        try:
            async for piece in self._pieces:
                self._acc.add(piece)
                yield _chunk(piece, self._trace, self._acc)
        except GeneratorExit:
            raise
        except Exception as exc:
            category, error = self._router._measure_failure(self._trace, exc, self._started)
            await asyncio.to_thread(
                self._router._record, self._trace, False, None, category, str(exc)[:1000]
            )
            raise error from exc
        helper = RoutedStream(self._router, self._trace, iter(()))
        helper._acc, helper._started = self._acc, self._started
        await asyncio.to_thread(helper._complete)

    @property
    def content(self) -> str:
        """The text streamed so far."""
        return self._acc.content


def _chunk(piece: StreamPiece, trace: Trace, acc: StreamAccumulator) -> ChatCompletionChunk:
    choices = []
    if piece.content is not None or piece.tool_calls or piece.finish_reason or piece.role:
        choices.append(
            ChunkChoice.model_construct(
                index=0,
                delta=ChoiceDelta.model_construct(
                    role="assistant" if piece.role else None,
                    content=piece.content,
                    tool_calls=piece.tool_calls,
                ),
                finish_reason=piece.finish_reason,
            )
        )
    usage = None
    if piece.completion_tokens is not None:
        # The whole call's usage, once the answer's token count is known. Anthropic sends the
        # prompt's tokens at the start of the stream and the answer's at the end.
        usage = Usage(
            prompt_tokens=acc.prompt_tokens,
            completion_tokens=acc.completion_tokens,
            total_tokens=acc.prompt_tokens + acc.completion_tokens,
        )
    return ChatCompletionChunk.model_construct(
        id=piece.id or "",
        object="chat.completion.chunk",
        created=int(time.time()),
        model=piece.model or trace.path.model_id,
        choices=choices,
        usage=usage,
        kalibr_trace_id=trace.trace_id,
    )


# dict first: for the usual dict, isinstance stops there instead of asking the Mapping ABC.
_MESSAGE_TYPES = (dict, Mapping)


def _check_messages(messages: object, goal: str) -> None:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise ValidationError(
            "messages must be a non-empty list of OpenAI-format messages",
            field="messages",
            goal=goal,
        )
    for index, message in enumerate(messages):
        if not isinstance(message, _MESSAGE_TYPES) or not isinstance(message.get("role"), str):
            raise ValidationError(
                f"messages[{index}] must be a dict with a 'role' (and 'content')",
                field="messages",
                goal=goal,
            )


def _check_max_tokens(max_tokens: object, goal: str) -> None:
    # Checked before deciding: a rejected call must leave no trace to report against.
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise ValidationError(
            "max_tokens must be a positive integer", field="max_tokens", goal=goal
        )


def _finite(value: float | None) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value) or value < 0:
        return None
    return value

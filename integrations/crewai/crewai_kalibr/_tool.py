"""KalibrRouteTool: a CrewAI tool whose implementations are the paths, routed by outcome.

The article's pattern: several functions do the same job (research with one model or
another, one API or another), the agent sees one tool, and each call runs the implementation
that works. The implementations are not LLM calls, so the tool routes with the lower-level
:class:`kalibr_core.Intelligence`: each implementation is a path of the goal (its name is the
path's model id), every call is a ``decide()``, and every decision gets one outcome through
``report_outcome()``:

* the tool's ``success_when`` / ``score_when`` judges the result at once;
* without them, an implementation that raises (``tool_error``) or returns None or ""
  (``empty_response``) fails at once, and any other result waits for the task's verdict
  (a guardrail, a task or step callback: see :mod:`crewai_kalibr._outcomes`).

Fail-open, as the Router: if deciding fails, the first implementation runs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crewai.tools import BaseTool
from pydantic import BaseModel, Field, PrivateAttr, create_model, model_validator

from crewai_kalibr._outcomes import TASK_CALLS, RoutedCall, Verdict, task_id_of

if TYPE_CHECKING:
    from kalibr_core._api import IntelligenceBackend

logger = logging.getLogger("crewai_kalibr")

Implementation = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class _Decision:
    trace_id: str
    path: str


class _IntelligenceCalls:
    """Reports a task's tool calls through ``report_outcome``: one outcome per decision."""

    def __init__(self, tool: KalibrRouteTool) -> None:
        self.tool = tool

    def report_calls(self, calls: Sequence[RoutedCall], verdict: Verdict) -> None:
        for call in calls:
            self.tool._report(call, verdict)


class KalibrRouteTool(BaseTool):
    """A CrewAI tool routed between implementations that do the same job.

    Args:
        goal: The goal (one success criterion for every implementation).
        paths: The implementations: functions taking the ``args_schema`` fields as keyword
            arguments, or a mapping ``{name: function}``. A function's ``__name__`` is its
            path (its model id in kalibr). The first is the fail-open fallback.
        name: The tool's name for the agent (default: the goal).
        description: What the tool does, for the agent.
        args_schema: The arguments (default: built from the first implementation's signature).
        success_when: ``f(result) -> bool`` judging each result at once (None included).
        score_when: ``f(result) -> float`` in [0, 1], instead of ``success_when``.
        empty_result: What the agent sees when an implementation returns None.
        exploration_rate: Extra uniform exploration for this tool's decisions.
        pipeline_id: Scope the learning to a pipeline.
        intelligence: The Intelligence to use (default: the process-wide one).

    Example:
        >>> research = KalibrRouteTool(  # doctest: +SKIP
        ...     goal="research",
        ...     description="Research a topic or answer a question thoroughly",
        ...     args_schema=ResearchInput,
        ...     paths=[research_with_gpt4o, research_with_claude],
        ...     success_when=is_research_complete,
        ... )
        >>> Agent(role="Research Analyst", ..., tools=[research])  # doctest: +SKIP
    """

    goal: str
    paths: Sequence[Implementation] | Mapping[str, Implementation] = Field(exclude=True)
    success_when: Callable[[Any], bool] | None = Field(default=None, exclude=True)
    score_when: Callable[[Any], float] | None = Field(default=None, exclude=True)
    empty_result: str = "The tool returned no result."
    exploration_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    pipeline_id: str | None = None
    intelligence: Any = Field(default=None, exclude=True)

    _implementations: dict[str, Implementation] = PrivateAttr(default_factory=dict)
    _calls: _IntelligenceCalls = PrivateAttr()
    _registered: bool = PrivateAttr(default=False)
    _register_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_paths(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if not data.get("name") and isinstance(data.get("goal"), str):
            data["name"] = data["goal"]
        if data.get("args_schema") is None:
            first = next(iter(_named(data.get("paths")).values()), None)
            if first is not None:
                data["args_schema"] = _schema_of(first, f"{data.get('name', 'Tool')}Input")
        return data

    def model_post_init(self, context: Any) -> None:
        """Check the implementations and register them as the goal's paths."""
        super().model_post_init(context)
        implementations = _named(self.paths)
        if not implementations:
            raise ValueError("KalibrRouteTool needs paths=: a non-empty list of functions")
        self._implementations = implementations
        self._calls = _IntelligenceCalls(self)
        self._register()

    @property
    def backend(self) -> IntelligenceBackend:
        """The Intelligence this tool decides with and reports to."""
        if self.intelligence is not None:
            backend: IntelligenceBackend = self.intelligence
            return backend
        from kalibr_core import get_intelligence

        return get_intelligence()

    # -- running ---------------------------------------------------------------------------------
    def _run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the implementation routing picks, and report (or keep) its outcome."""
        if _in_event_loop() and any(
            inspect.iscoroutinefunction(fn) for fn in self._implementations.values()
        ):
            raise RuntimeError(
                f"tool {self.name} has async implementations and this thread runs an event "
                "loop: use arun()"
            )
        decision = self._decide()
        started = time.perf_counter()
        try:
            result = self._implementations[decision.path](*args, **kwargs)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
        except Exception as exc:
            self._failed(decision, started, exc)
            raise
        return self._judge(decision, result, started)

    async def _arun(self, *args: Any, **kwargs: Any) -> Any:
        """Async form of :meth:`_run` (sync implementations run in a worker thread)."""
        decision = self._decide()
        implementation = self._implementations[decision.path]
        started = time.perf_counter()
        try:
            if inspect.iscoroutinefunction(implementation):
                result = await implementation(*args, **kwargs)
            else:
                result = await asyncio.to_thread(implementation, *args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            self._failed(decision, started, exc)
            raise
        return self._judge(decision, result, started)

    def _decide(self) -> _Decision:
        names = list(self._implementations)
        try:
            self._register()
            decision = self.backend.decide(
                self.goal,
                candidate_model_ids=names,
                pipeline_id=self.pipeline_id,
                exploration_rate=self.exploration_rate,
            )
        except Exception as exc:  # fail open: a routing failure never reaches the agent
            logger.warning(
                "routing decision for tool %s failed (%s: %s); using %s",
                self.name,
                type(exc).__name__,
                exc,
                names[0],
            )
            return _Decision(uuid.uuid4().hex, names[0])
        path = decision["model_id"]
        return _Decision(decision["trace_id"], path if path in self._implementations else names[0])

    def _failed(self, decision: _Decision, started: float, exc: Exception) -> None:
        call = RoutedCall(decision.trace_id, decision.path, _elapsed_ms(started))
        self._report(
            call,
            Verdict(
                False, reason=f"{type(exc).__name__}: {exc}"[:4096], failure_category="tool_error"
            ),
        )

    def _judge(self, decision: _Decision, result: Any, started: float) -> Any:
        call = RoutedCall(decision.trace_id, decision.path, _elapsed_ms(started))
        empty = result is None or (isinstance(result, str) and not result.strip())
        if self.score_when is not None:
            self._report(call, Verdict.from_check(float(self.score_when(result)), "score_when"))
        elif self.success_when is not None:
            self._report(call, Verdict.from_check(bool(self.success_when(result)), "success_when"))
        elif empty:
            self._report(
                call,
                Verdict(
                    False,
                    reason=f"{decision.path} returned no result",
                    failure_category="empty_response",
                ),
            )
        else:
            task_id = task_id_of()
            if task_id is not None:
                TASK_CALLS.record(task_id, self._calls, call)
            else:
                logger.warning(
                    "tool %s ran outside a CrewAI task without success_when: "
                    "the outcome of %s is not reported",
                    self.name,
                    decision.trace_id,
                )
        return self.empty_result if result is None else result

    # -- outcomes --------------------------------------------------------------------------------
    def _register(self) -> None:
        if self._registered:
            return
        with self._register_lock:
            if self._registered:
                return
            try:
                for name in self._implementations:
                    self.backend.register_path(self.goal, name)
            except Exception as exc:  # fail open: retried on the next call
                logger.warning("registering the paths of tool %s failed (%s)", self.name, exc)
                return
            self._registered = True

    def _report(self, call: RoutedCall, verdict: Verdict) -> None:
        try:
            self.backend.report_outcome(
                call.trace_id,
                self.goal,
                success=verdict.success,
                score=verdict.score,
                failure_reason=verdict.reason,
                failure_category=verdict.failure_category,
                model_id=call.path,
                latency_ms=call.latency_ms,
                pipeline_id=self.pipeline_id,
                wait=False,
            )
        except Exception:  # fail open: a reporting problem never fails the agent's tool call
            logger.exception("reporting tool call %s of %s failed", call.trace_id, self.goal)


def _named(paths: object) -> dict[str, Implementation]:
    """``{name: implementation}`` from a list of functions or a mapping (validated)."""
    if isinstance(paths, Mapping):
        items = list(paths.items())
    elif isinstance(paths, Sequence) and not isinstance(paths, str | bytes):
        items = [(getattr(fn, "__name__", ""), fn) for fn in paths]
    else:
        return {}
    named: dict[str, Implementation] = {}
    for name, fn in items:
        if not callable(fn):
            raise ValueError(f"path {name or fn!r} is not a function")
        if not isinstance(name, str) or not name or name == "<lambda>":
            raise ValueError(
                f"path {fn!r} has no usable name: give paths as a mapping {{name: function}}"
            )
        if name in named:
            raise ValueError(f"two paths are named {name!r}: give paths as a mapping")
        named[name] = fn
    return named


def _schema_of(fn: Implementation, model_name: str) -> type[BaseModel]:
    """An args schema from an implementation's signature (what the agent must pass)."""
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(fn).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = Any if parameter.annotation is parameter.empty else parameter.annotation
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[name] = (annotation, default)
    schema: type[BaseModel] = create_model(model_name, **fields)
    return schema


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _awaited(value: Any) -> Any:
    return await value


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000

"""Outcomes from where CrewAI already judges the work: guardrails, task and step callbacks.

CrewAI decides whether a task's work is good in a few places: a task guardrail passes or
blocks the output (a block re-runs the agent), the task callback runs once the task completed,
a step callback sees every agent step. Those hooks receive the output, not the calls that
produced it. What links the two is CrewAI's current task id
(:func:`crewai.context.get_current_task_id`): it is set while a task runs, its guardrails and
callbacks included, and copied into the threads that run its tools. So every routed call made
under a task id (by :class:`~crewai_kalibr.KalibrLLM` or
:class:`~crewai_kalibr.KalibrRouteTool`) waits in :data:`TASK_CALLS` until a verdict on that
task reports it::

    KalibrLLM.call / KalibrRouteTool._run  --(task id, trace id)-->  TASK_CALLS
    guardrail block or pass, task callback, step callback  --(task id, verdict)-->  report

A verdict reports every call the task made since the previous verdict, and the next call of
the task is routed afresh: a guardrail that blocks reports the attempt's calls as failures and
CrewAI's retry gets a new routing decision. What each source does with a verdict (one outcome
per path for an LLM conversation, one per decision for a tool) is its own business: see
:class:`OutcomeSink`.

:data:`TASK_CALLS` is process-wide because the hooks can reach it only through the task id;
it is bounded (the oldest tasks are dropped with a warning) and guarded by a lock.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from crewai.context import get_current_task_id
from crewai.tasks.task_output import TaskOutput

logger = logging.getLogger("crewai_kalibr")

TaskCheck = Callable[[TaskOutput], bool | float]
StepCheck = Callable[[Any], bool | float | None]
Guardrail = Callable[[TaskOutput], tuple[bool, Any]]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a CrewAI hook decided about a task's work.

    Attributes:
        success: Whether the work achieved the goal.
        score: Quality in [0, 1], if the hook gave one.
        reason: Why not (a guardrail's error message, say).
        failure_category: One of ``kalibr_core.FAILURE_CATEGORIES``.
    """

    success: bool
    score: float | None = None
    reason: str | None = None
    failure_category: str | None = None

    @classmethod
    def from_check(cls, value: bool | float, what: str) -> Verdict:
        """A verdict from a check's answer: a bool, or a score (success is ``score >= 0.5``)."""
        if isinstance(value, bool):
            if value:
                return cls(True)
            return cls(False, reason=f"{what} returned False", failure_category="validation_failed")
        score = min(1.0, max(0.0, float(value)))
        if score >= 0.5:
            return cls(True, score=score)
        return cls(
            False,
            score=score,
            reason=f"{what} gave {score:.3f}",
            failure_category="validation_failed",
        )


@dataclass(frozen=True, slots=True)
class RoutedCall:
    """One routed call waiting for its task's verdict.

    Attributes:
        trace_id: The call's trace.
        path: The path that served it (a model, or a tool implementation's name).
        latency_ms: How long it took, when the source reports latency itself.
    """

    trace_id: str
    path: str
    latency_ms: float | None = None


class OutcomeSink(Protocol):
    """Where a source's routed calls are reported when their task gets a verdict."""

    def report_calls(self, calls: Sequence[RoutedCall], verdict: Verdict) -> None:
        """Report ``calls`` (made by this sink's source, in one task) with ``verdict``."""


@dataclass(slots=True)
class _SinkCalls:
    sink: OutcomeSink
    calls: list[RoutedCall] = field(default_factory=list)
    sticky_path: str | None = None


class TaskCalls:
    """The routed calls of each task that no verdict has reported yet (bounded, thread-safe).

    Args:
        capacity: How many tasks to remember; beyond it the oldest task's calls are dropped
            (logged: no hook gave them a verdict).
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._tasks: OrderedDict[str, dict[int, _SinkCalls]] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def record(self, task_id: str, sink: OutcomeSink, call: RoutedCall) -> None:
        """Keep ``call`` until the task's next verdict; ``sink``'s later calls stick to its path."""
        dropped: tuple[str, dict[int, _SinkCalls]] | None = None
        with self._lock:
            sinks = self._tasks.setdefault(task_id, {})
            self._tasks.move_to_end(task_id)
            entry = sinks.setdefault(id(sink), _SinkCalls(sink))
            entry.calls.append(call)
            if entry.sticky_path is None:
                entry.sticky_path = call.path
            if len(self._tasks) > self._capacity:
                dropped = self._tasks.popitem(last=False)
        if dropped is not None:
            # Not a warning: calls that success_when already judged are kept here too.
            logger.info(
                "forgetting task %s: no CrewAI hook gave a verdict on its %d routed call(s)",
                dropped[0],
                sum(len(entry.calls) for entry in dropped[1].values()),
            )

    def sticky_path(self, task_id: str, sink: OutcomeSink) -> str | None:
        """The path ``sink``'s calls in this task stay on until the next verdict (or None)."""
        with self._lock:
            entry = self._tasks.get(task_id, {}).get(id(sink))
            return entry.sticky_path if entry is not None else None

    def release(self, task_id: str, sink: OutcomeSink) -> None:
        """Route ``sink``'s next call in this task afresh (its path just failed)."""
        with self._lock:
            entry = self._tasks.get(task_id, {}).get(id(sink))
            if entry is not None:
                entry.sticky_path = None

    def pending(self, task_id: str) -> list[RoutedCall]:
        """The task's calls waiting for a verdict, in the order they were made."""
        with self._lock:
            return [call for entry in self._tasks.get(task_id, {}).values() for call in entry.calls]

    def report(self, task_id: str, verdict: Verdict) -> int:
        """Report the task's waiting calls with ``verdict``; returns how many were reported."""
        with self._lock:
            sinks = self._tasks.pop(task_id, {})
        for entry in sinks.values():
            if entry.calls:
                entry.sink.report_calls(entry.calls, verdict)
        return sum(len(entry.calls) for entry in sinks.values())


TASK_CALLS = TaskCalls()
"""The process-wide ledger the sources record into and the hooks report from."""


def task_id_of(task: object | None = None) -> str | None:
    """The task whose hooks will judge a call made now (None outside any task).

    The task running in this context wins over ``task`` (the task a call says it is for): work
    delegated to a coworker is done for the running task, and judged by its hooks.
    """
    running = get_current_task_id()
    if running is not None:
        return running
    task_id = getattr(task, "id", None)
    return None if task_id is None else str(task_id)


def report_task(
    success: bool,
    reason: str | None = None,
    score: float | None = None,
    failure_category: str | None = None,
    *,
    task_id: str | None = None,
) -> int:
    """Report the routed calls of the running task (or of ``task_id``) since its last verdict.

    The primitive under the guardrail and callback helpers, for your own hooks: call it
    anywhere CrewAI runs task code (a guardrail, a callback, a tool).

    Args:
        success: Whether the task's work achieved the goal.
        reason: Why not.
        score: Quality in [0, 1].
        failure_category: One of ``kalibr_core.FAILURE_CATEGORIES``.
        task_id: The task (default: the one running in this context).

    Returns:
        How many routed calls were reported (0 outside a task, or when none were waiting).
    """
    task_id = task_id or get_current_task_id()
    if task_id is None:
        logger.warning("report_task() outside a CrewAI task: there is no task to report")
        return 0
    return TASK_CALLS.report(task_id, Verdict(success, score, reason, failure_category))


def report_task_outcome(output: TaskOutput) -> None:
    """Task callback: the task completed (every guardrail passed), so its calls succeeded.

    A module-level function, so CrewAI can checkpoint it::

        Task(..., callback=report_task_outcome)  # or Crew(..., task_callback=...)
    """
    del output  # reaching the callback is the verdict
    report_task(True)


_GUARDRAIL_SIGNATURE = inspect.Signature(
    [inspect.Parameter("output", inspect.Parameter.POSITIONAL_OR_KEYWORD)],
    return_annotation=tuple[bool, Any],
)


def reporting_guardrail(guardrail: Guardrail, *, final: bool = True) -> Guardrail:
    """Wrap a task guardrail so that its verdict becomes the outcome of the task's routed calls.

    A block reports the attempt's calls as failures (``validation_failed``, with the
    guardrail's message) and CrewAI's retry is routed afresh; a pass reports them as successes.
    CrewAI's contract is kept: the wrapper returns the guardrail's ``(passed, result)``
    unchanged, and shows CrewAI the guardrail's own signature, name and source (its
    annotations evaluated, so ``-> tuple[bool, Any]`` passes CrewAI's check in a module with
    postponed annotations too).

    Args:
        guardrail: A CrewAI guardrail: ``f(TaskOutput) -> (bool, result_or_error)`` (a
            function, or any callable: CrewAI itself accepts only functions).
        final: Whether a pass is the final word. With several guardrails, give
            ``final=False`` to all but the last one, so that a pass reports nothing while a
            later guardrail (or the task callback) still has to judge the output.

    Returns:
        The guardrail to give ``Task(guardrail=...)`` or ``Task(guardrails=[...])``.

    Example:
        >>> def cites_sources(output):  # doctest: +SKIP
        ...     return ("http" in output.raw, output.raw)
        >>> Task(..., guardrail=reporting_guardrail(cites_sources))  # doctest: +SKIP
    """
    if not callable(guardrail):
        raise TypeError(
            "reporting_guardrail() wraps a guardrail function; for a guardrail described in "
            "words, report from the task callback (report_task_outcome) instead"
        )

    def reporting(output: TaskOutput) -> tuple[bool, Any]:
        passed, result = guardrail(output)
        if not passed:
            report_task(False, reason=str(result), failure_category="validation_failed")
        elif final:
            report_task(True)
        return passed, result

    # CrewAI shows a function guardrail's name and source (inspect follows __wrapped__), and
    # reads its return annotation as an object: postponed annotations are evaluated.
    if inspect.isfunction(guardrail) or inspect.ismethod(guardrail):
        functools.update_wrapper(reporting, guardrail)
    try:
        signature = inspect.signature(guardrail, eval_str=True)
    except (NameError, TypeError, ValueError):
        signature = _GUARDRAIL_SIGNATURE
    reporting.__signature__ = signature  # type: ignore[attr-defined]
    return reporting


class TaskOutcomeCallback:
    """A task callback reporting ``check(output)`` (a bool, or a score in [0, 1])."""

    def __init__(self, check: TaskCheck) -> None:
        self.check = check

    def __call__(self, output: TaskOutput) -> None:
        """Judge the completed task's output and report the verdict."""
        verdict = Verdict.from_check(self.check(output), "the task callback's check")
        report_task(verdict.success, verdict.reason, verdict.score, verdict.failure_category)


def task_outcome_callback(check: TaskCheck) -> TaskOutcomeCallback:
    """A task callback that judges the completed task's output with ``check``.

    Args:
        check: ``f(TaskOutput) -> bool`` or a score in [0, 1] (success is ``score >= 0.5``).

    Note:
        CrewAI warns that callable objects "cannot be serialized" (checkpointing); use
        :func:`report_task_outcome` where that matters.
    """
    return TaskOutcomeCallback(check)


class StepOutcomeCallback:
    """An agent step callback reporting ``check(step)`` when it gives a verdict."""

    def __init__(self, check: StepCheck) -> None:
        self.check = check

    def __call__(self, step: Any) -> None:
        """Judge one agent step (``AgentAction``, ``AgentFinish`` or a tool result)."""
        value = self.check(step)
        if value is None:
            return
        verdict = Verdict.from_check(value, "the step callback's check")
        report_task(verdict.success, verdict.reason, verdict.score, verdict.failure_category)


def step_outcome_callback(check: StepCheck) -> StepOutcomeCallback:
    """A step callback (``Agent(step_callback=...)`` or ``Crew(step_callback=...)``).

    Args:
        check: ``f(step) -> bool | float | None`` for every agent step (``AgentAction``,
            ``AgentFinish``...); None means "no verdict yet", anything else reports the
            task's calls so far.
    """
    return StepOutcomeCallback(check)

"""The ledger of a task's routed calls, and the hooks that report them (without a crew)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from crewai import Agent, Task
from crewai.context import reset_current_task_id, set_current_task_id
from crewai.tasks.task_output import TaskOutput

from crewai_kalibr import (
    KalibrLLM,
    Verdict,
    report_task,
    report_task_outcome,
    reporting_guardrail,
    step_outcome_callback,
    task_outcome_callback,
)
from crewai_kalibr._outcomes import TASK_CALLS, RoutedCall, TaskCalls, task_id_of
from kalibr_core import Intelligence


class Sink:
    """Records what a verdict reports."""

    def __init__(self) -> None:
        self.reports: list[tuple[list[str], Verdict]] = []

    def report_calls(self, calls: Sequence[RoutedCall], verdict: Verdict) -> None:
        self.reports.append(([call.trace_id for call in calls], verdict))


@pytest.fixture
def in_task() -> Any:
    """Run the test as if inside CrewAI task ``task-1`` (CrewAI's own context variable)."""
    token = set_current_task_id("task-1")
    yield "task-1"
    reset_current_task_id(token)
    TASK_CALLS.report("task-1", Verdict(True))  # leave nothing behind


def output(raw: str = "an answer") -> TaskOutput:
    return TaskOutput(description="d", raw=raw, agent="a")


def test_verdict_from_a_bool_or_a_score() -> None:
    assert Verdict.from_check(True, "check") == Verdict(True)
    assert Verdict.from_check(False, "check") == Verdict(
        False, reason="check returned False", failure_category="validation_failed"
    )
    assert Verdict.from_check(0.8, "check") == Verdict(True, score=0.8)
    assert Verdict.from_check(0.2, "check").success is False
    assert Verdict.from_check(0.2, "check").score == 0.2
    assert Verdict.from_check(7.0, "check").score == 1.0


def test_a_verdict_reports_each_sinks_calls_once_and_unsticks_the_task() -> None:
    ledger, llm, tool = TaskCalls(), Sink(), Sink()
    ledger.record("t", llm, RoutedCall("a" * 32, "gpt-4o"))
    ledger.record("t", tool, RoutedCall("b" * 32, "search_web", 12.0))
    ledger.record("t", llm, RoutedCall("c" * 32, "gpt-4o"))
    ledger.record("other", llm, RoutedCall("d" * 32, "claude"))
    assert ledger.sticky_path("t", llm) == "gpt-4o"
    assert [c.trace_id[0] for c in ledger.pending("t")] == ["a", "c", "b"]

    assert ledger.report("t", Verdict(False, reason="blocked")) == 3

    assert llm.reports == [(["a" * 32, "c" * 32], Verdict(False, reason="blocked"))]
    assert tool.reports == [(["b" * 32], Verdict(False, reason="blocked"))]
    assert ledger.sticky_path("t", llm) is None  # the retry is routed afresh
    assert ledger.report("t", Verdict(True)) == 0  # nothing is reported twice
    assert ledger.pending("other") == [RoutedCall("d" * 32, "claude")]


def test_release_routes_the_next_call_afresh_and_keeps_the_calls() -> None:
    ledger, sink = TaskCalls(), Sink()
    ledger.record("t", sink, RoutedCall("a" * 32, "gpt-4o"))
    ledger.release("t", sink)
    assert ledger.sticky_path("t", sink) is None
    ledger.record("t", sink, RoutedCall("b" * 32, "claude"))
    assert ledger.sticky_path("t", sink) == "claude"
    assert len(ledger.pending("t")) == 2


def test_the_ledger_is_bounded_and_says_what_it_drops(caplog: pytest.LogCaptureFixture) -> None:
    ledger, sink = TaskCalls(capacity=2), Sink()
    with caplog.at_level(logging.INFO, logger="crewai_kalibr"):
        for task in ("t1", "t2", "t3"):
            ledger.record(task, sink, RoutedCall("a" * 32, "gpt-4o"))
    assert ledger.pending("t1") == []
    assert "forgetting task t1: no CrewAI hook gave a verdict on its 1 routed call(s)" in (
        caplog.text
    )
    assert len(ledger.pending("t3")) == 1


def test_report_task_outside_a_task_reports_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="crewai_kalibr"):
        assert report_task(True) == 0
    assert "outside a CrewAI task" in caplog.text


def test_the_running_task_wins_over_the_task_a_call_names(in_task: str) -> None:
    delegated = Task(description="A coworker's part", expected_output="Notes")
    assert task_id_of(delegated) == in_task  # delegated work is judged by the running task
    token = set_current_task_id(None)
    try:
        assert task_id_of(delegated) == str(delegated.id)
        assert task_id_of() is None
    finally:
        reset_current_task_id(token)


def test_report_task_reports_the_running_tasks_calls(in_task: str) -> None:
    sink = Sink()
    TASK_CALLS.record(in_task, sink, RoutedCall("a" * 32, "gpt-4o"))
    assert report_task(False, reason="wrong", failure_category="validation_failed") == 1
    assert sink.reports == [
        (["a" * 32], Verdict(False, reason="wrong", failure_category="validation_failed"))
    ]


def test_a_blocking_guardrail_reports_failure_and_returns_its_verdict(in_task: str) -> None:
    sink = Sink()
    TASK_CALLS.record(in_task, sink, RoutedCall("a" * 32, "gpt-4o"))
    guardrail = reporting_guardrail(lambda out: (False, "no sources cited"))

    assert guardrail(output()) == (False, "no sources cited")
    assert sink.reports == [
        (
            ["a" * 32],
            Verdict(False, reason="no sources cited", failure_category="validation_failed"),
        )
    ]


def test_a_passing_guardrail_reports_success_unless_not_final(in_task: str) -> None:
    sink = Sink()
    TASK_CALLS.record(in_task, sink, RoutedCall("a" * 32, "gpt-4o"))
    assert reporting_guardrail(lambda out: (True, out.raw), final=False)(output()) == (
        True,
        "an answer",
    )
    assert sink.reports == []  # a later guardrail still judges this output
    reporting_guardrail(lambda out: (True, out.raw))(output())
    assert sink.reports == [(["a" * 32], Verdict(True))]


def annotated_guardrail(result: TaskOutput) -> tuple[bool, Any]:
    """Checks the answer cites a source."""
    return ("http" in result.raw, result.raw)


def test_crewai_accepts_the_wrapped_guardrail(intel: Intelligence) -> None:
    guardrail = reporting_guardrail(annotated_guardrail)
    # CrewAI checks the signature and shows the name and source of a guardrail: the user's,
    # with this module's postponed annotations evaluated (CrewAI would reject the string).
    signature = inspect.signature(guardrail)
    assert list(signature.parameters) == ["result"]
    assert signature.return_annotation == tuple[bool, Any]
    assert guardrail.__name__ == "annotated_guardrail"
    assert "cites a source" in inspect.getsource(guardrail)
    llm = KalibrLLM(goal="g", paths=["gpt-4o"], intelligence=intel)
    agent = Agent(role="r", goal="g", backstory="b", llm=llm)
    task = Task(description="d", expected_output="e", agent=agent, guardrail=guardrail)
    assert task.guardrail is guardrail


def test_reporting_guardrail_needs_a_function() -> None:
    with pytest.raises(TypeError, match="task callback"):
        reporting_guardrail("The answer must cite a source")  # type: ignore[arg-type]


def test_report_task_outcome_reports_success(in_task: str) -> None:
    sink = Sink()
    TASK_CALLS.record(in_task, sink, RoutedCall("a" * 32, "gpt-4o"))
    report_task_outcome(output())
    assert sink.reports == [(["a" * 32], Verdict(True))]


def test_a_task_callback_judges_the_output_with_a_score(in_task: str) -> None:
    sink = Sink()
    TASK_CALLS.record(in_task, sink, RoutedCall("a" * 32, "gpt-4o"))
    task_outcome_callback(lambda out: 0.25)(output())
    assert sink.reports == [
        (
            ["a" * 32],
            Verdict(
                False,
                score=0.25,
                reason="the task callback's check gave 0.250",
                failure_category="validation_failed",
            ),
        )
    ]


def test_a_step_callback_reports_only_when_its_check_decides(in_task: str) -> None:
    sink = Sink()
    callback = step_outcome_callback(lambda step: None if step == "thinking" else step == "good")
    TASK_CALLS.record(in_task, sink, RoutedCall("a" * 32, "gpt-4o"))
    callback("thinking")
    assert sink.reports == []
    callback("good")
    assert sink.reports == [(["a" * 32], Verdict(True))]

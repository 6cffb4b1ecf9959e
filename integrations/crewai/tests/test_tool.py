"""KalibrRouteTool: implementations routed by outcome through the Intelligence."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from crewai.context import reset_current_task_id, set_current_task_id
from crewai.tools import BaseTool
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError

from crewai_kalibr import KalibrRouteTool, report_task
from crewai_kalibr._outcomes import TASK_CALLS, Verdict
from kalibr_core import Intelligence, NoPathAvailableError

from .conftest import Stored


class ResearchInput(BaseModel):
    query: str = Field(description="The research query to answer")


def research_thorough(query: str) -> str | None:
    return f"{query}: first finding. Second finding. Third finding."


def research_broken(query: str) -> str | None:
    return None


def research_failing(query: str) -> str | None:
    raise TimeoutError("the search API timed out")


def is_research_complete(result: str | None) -> bool:
    return bool(result) and result.count(".") >= 3  # type: ignore[union-attr]


def make_tool(intel: Intelligence, paths: Any, **kwargs: Any) -> KalibrRouteTool:
    return KalibrRouteTool(
        goal="research",
        description="Research a topic or answer a question thoroughly",
        args_schema=ResearchInput,
        paths=paths,
        intelligence=intel,
        **kwargs,
    )


@pytest.fixture
def in_task() -> Iterator[str]:
    token = set_current_task_id("tool-task")
    yield "tool-task"
    reset_current_task_id(token)
    TASK_CALLS.report("tool-task", Verdict(True))


def test_the_implementations_are_the_goals_paths(intel: Intelligence) -> None:
    tool = make_tool(intel, [research_thorough, research_broken])
    assert isinstance(tool, BaseTool)
    assert tool.name == "research"
    assert sorted(p["model_id"] for p in intel.list_paths("research")["paths"]) == [
        "research_broken",
        "research_thorough",
    ]
    assert "paths" not in tool.model_dump()


def test_a_mapping_names_the_paths(intel: Intelligence) -> None:
    tool = make_tool(intel, {"fast": lambda query: "f", "deep": lambda query: "d"})
    assert sorted(p["model_id"] for p in intel.list_paths("research")["paths"]) == ["deep", "fast"]
    assert tool.run(query="q") in ("f", "d")


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ([], "non-empty list of functions"),
        ([lambda query: "x"], "as a mapping"),
        ([research_thorough, research_thorough], "two paths are named"),
        ({"a": "not a function"}, "Input should be callable"),
    ],
)
def test_bad_paths_are_refused(intel: Intelligence, paths: Any, message: str) -> None:
    with pytest.raises((PydanticValidationError, ValueError), match=message):
        make_tool(intel, paths)


def test_the_args_schema_defaults_to_the_first_implementations_signature(
    intel: Intelligence,
) -> None:
    def lookup(city: str, days: int = 3) -> str:
        return f"{city} for {days} days"

    tool = KalibrRouteTool(
        goal="weather", description="Forecast", paths=[lookup], intelligence=intel
    )
    assert set(tool.args_schema.model_fields) == {"city", "days"}
    assert tool.run(city="Oslo") == "Oslo for 3 days"


def test_success_when_reports_each_call_on_its_implementation(
    intel: Intelligence, stored: Stored
) -> None:
    tool = make_tool(intel, [research_thorough, research_broken], success_when=is_research_complete)
    results = [tool.run(query="tides") for _ in range(4)]
    outcomes = stored("research")
    assert len(outcomes) == 4
    for result, outcome in zip(results, outcomes, strict=True):
        thorough = result.startswith("tides:")
        assert outcome.model_id == ("research_thorough" if thorough else "research_broken")
        assert outcome.success is thorough
        assert outcome.path_id is not None  # attributed: it steers routing
        assert outcome.latency_ms is not None
    assert all(r.startswith("tides:") or r == tool.empty_result for r in results)


def test_routing_learns_which_implementation_works(intel: Intelligence) -> None:
    calls: Counter[str] = Counter()

    def flaky(query: str) -> str | None:
        calls["flaky"] += 1
        return None if calls["flaky"] % 4 else research_thorough(query)

    def steady(query: str) -> str | None:
        calls["steady"] += 1
        return research_thorough(query)

    tool = make_tool(intel, [flaky, steady], success_when=is_research_complete)
    # Outcomes reach the store through the background writer within milliseconds; an agent's
    # tool calls are further apart than this loop's, so flush before each decision.
    for _ in range(60):
        tool.run(query="tides")
        intel.flush()
    late: Counter[str] = Counter()
    for _ in range(40):
        before = dict(calls)
        tool.run(query="tides")
        intel.flush()
        late.update(k for k in calls if calls[k] != before.get(k, 0))
    assert late["steady"] > 3 * late["flaky"]


def test_without_a_check_empty_results_and_errors_fail_at_once(
    intel: Intelligence, stored: Stored
) -> None:
    assert make_tool(intel, {"broken": research_broken}).run(query="q") == (
        "The tool returned no result."
    )
    with pytest.raises(TimeoutError):
        make_tool(intel, {"failing": research_failing}).run(query="q")
    broken, failing = stored("research")
    assert (broken.model_id, broken.success, broken.failure_category) == (
        "broken",
        False,
        "empty_response",
    )
    assert (failing.model_id, failing.success, failing.failure_category) == (
        "failing",
        False,
        "tool_error",
    )
    assert "timed out" in str(failing.failure_reason)


def test_without_a_check_a_result_waits_for_the_tasks_verdict(
    intel: Intelligence, stored: Stored, in_task: str
) -> None:
    tool = make_tool(intel, [research_thorough])
    tool.run(query="tides")
    tool.run(query="moon")
    assert stored("research") == []
    assert [call.path for call in TASK_CALLS.pending(in_task)] == ["research_thorough"] * 2

    assert (
        report_task(False, reason="not what was asked", failure_category="validation_failed") == 2
    )
    outcomes = stored("research")
    assert [(o.success, o.failure_reason) for o in outcomes] == [(False, "not what was asked")] * 2
    assert len({o.trace_id for o in outcomes}) == 2  # one outcome per decision


def test_outside_a_task_an_unjudged_result_is_not_reported(
    intel: Intelligence, stored: Stored, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="crewai_kalibr"):
        make_tool(intel, [research_thorough]).run(query="tides")
    assert stored("research") == []
    assert "outside a CrewAI task without success_when" in caplog.text


class BrokenIntelligence(Intelligence):
    def decide(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NoPathAvailableError("the store is down")


def test_routing_fails_open_to_the_first_implementation(
    stored: Stored, caplog: pytest.LogCaptureFixture
) -> None:
    intel = BrokenIntelligence(":memory:")
    try:
        tool = make_tool(intel, [research_thorough, research_broken], success_when=bool)
        with caplog.at_level(logging.WARNING, logger="crewai_kalibr"):
            assert tool.run(query="tides").startswith("tides:")
        assert "using research_thorough" in caplog.text
        intel.flush()
        (outcome,) = intel.store.outcomes_in_window(intel.tenant, "research", 0)
        assert (outcome.model_id, outcome.success) == ("research_thorough", True)
    finally:
        intel.close()


@pytest.mark.asyncio
async def test_arun_routes_sync_and_async_implementations(
    intel: Intelligence, stored: Stored
) -> None:
    async def research_async(query: str) -> str | None:
        return research_thorough(query)

    tool = make_tool(intel, [research_async, research_thorough], success_when=is_research_complete)
    results = [await tool.arun(query="tides") for _ in range(4)]
    assert all(r.startswith("tides:") for r in results)
    assert all(outcome.success for outcome in stored("research"))
    with pytest.raises(RuntimeError, match="use arun"):
        tool.run(query="moon")  # an async implementation cannot run inside this loop
    assert len(stored("research")) == 4  # and that misuse is not the path's failure


def test_run_awaits_an_async_implementation_outside_an_event_loop(intel: Intelligence) -> None:
    async def research_async(query: str) -> str | None:
        return research_thorough(query)

    assert make_tool(intel, [research_async]).run(query="moon").startswith("moon:")

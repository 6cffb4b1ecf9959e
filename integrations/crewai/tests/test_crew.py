"""End to end: a Crew with a routed agent, a routed tool and a task runs ``kickoff`` offline.

The simulator drives CrewAI's agent loop: with native function calling it calls the tool,
then relays the tool's result as the final answer; in CrewAI's ReAct text format it writes
``Action:`` / ``Action Input:``, then ``Final Answer:``. The outcomes come from CrewAI's own
hooks: the task guardrail, the task callback, the step callback.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from crewai import Agent, Crew, Task
from crewai.agents.parser import AgentFinish
from crewai.tasks.task_output import TaskOutput
from pydantic import BaseModel, Field

from crewai_kalibr import (
    KalibrLLM,
    KalibrRouteTool,
    report_task_outcome,
    reporting_guardrail,
    step_outcome_callback,
    task_outcome_callback,
)
from kalibr_core import Intelligence
from kalibr_core.simulator import ModelScript, ProviderSimulator

from .conftest import Stored

AGENT_GOAL = "crew_research_agent"
TOOL_GOAL = "crew_research"


class ResearchInput(BaseModel):
    query: str = Field(description="The research query to answer")


class Implementations:
    """The article's pattern: two functions doing the same job; one returns nothing."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def research_quick(self, query: str) -> str | None:
        self.calls["research_quick"] += 1
        return None

    def research_thorough(self, query: str) -> str | None:
        self.calls["research_thorough"] += 1
        return "Agent frameworks: first finding. Second finding. Third finding."


class Guardrail:
    """Passes an output that carries the research findings; counts its verdicts."""

    def __init__(self) -> None:
        self.verdicts: list[bool] = []

    def __call__(self, output: TaskOutput) -> tuple[bool, Any]:
        passed = "finding" in output.raw
        self.verdicts.append(passed)
        return (passed, output.raw) if passed else (False, "the answer has no findings")


def has_findings(output: TaskOutput) -> tuple[bool, Any]:
    return ("finding" in output.raw, output.raw)


@pytest.fixture
def implementations() -> Implementations:
    return Implementations()


def research_tool(intel: Intelligence, implementations: Implementations) -> KalibrRouteTool:
    return KalibrRouteTool(
        goal=TOOL_GOAL,
        name="research_tool",
        description="Research a topic or answer a question thoroughly",
        args_schema=ResearchInput,
        paths={
            "research_quick": implementations.research_quick,
            "research_thorough": implementations.research_thorough,
        },
        intelligence=intel,
    )


def research_crew(
    llm: KalibrLLM,
    tool: KalibrRouteTool,
    *,
    task_kwargs: dict[str, Any] | None = None,
    agent_kwargs: dict[str, Any] | None = None,
    **crew_kwargs: Any,
) -> Crew:
    researcher = Agent(
        role="Research Analyst",
        goal="Research topics thoroughly and accurately",
        backstory="Expert at finding and synthesizing information",
        tools=[tool],
        llm=llm,
        **(agent_kwargs or {}),
    )
    task = Task(
        description="Research the current state of AI agent frameworks",
        expected_output="A comprehensive overview of major AI agent frameworks",
        agent=researcher,
        **(task_kwargs or {}),
    )
    return Crew(agents=[researcher], tasks=[task], **crew_kwargs)


@pytest.fixture
def llm(sim: ProviderSimulator, intel: Intelligence) -> Iterator[KalibrLLM]:
    yield KalibrLLM(goal=AGENT_GOAL, paths=["gpt-4o", "claude-haiku-4-5"], intelligence=intel)


def test_the_guardrail_reports_every_attempt_and_the_retries_are_rerouted(
    llm: KalibrLLM, intel: Intelligence, implementations: Implementations, stored: Stored
) -> None:
    guardrail = Guardrail()
    crew = research_crew(
        llm,
        research_tool(intel, implementations),
        task_kwargs={"guardrail": reporting_guardrail(guardrail), "guardrail_max_retries": 8},
    )

    result = crew.kickoff()

    assert "finding" in result.raw
    attempts = len(guardrail.verdicts)
    assert guardrail.verdicts == [False] * (attempts - 1) + [True]
    # The agent: one conversation per attempt, on one path, one outcome each.
    agent_outcomes = stored(AGENT_GOAL)
    assert [o.success for o in agent_outcomes] == guardrail.verdicts
    assert all(o.path_id is not None for o in agent_outcomes)
    blocked = [o for o in agent_outcomes if not o.success]
    assert all(o.failure_reason == "the answer has no findings" for o in blocked)
    assert all(o.failure_category == "validation_failed" for o in blocked)
    # The tool: the quick implementation failed at once (no result), the thorough one was
    # confirmed by the guardrail.
    tool_outcomes = stored(TOOL_GOAL)
    assert Counter((o.model_id, o.success) for o in tool_outcomes) == {
        ("research_quick", False): implementations.calls["research_quick"],
        ("research_thorough", True): 1,
    }
    assert implementations.calls["research_thorough"] == 1


def test_one_line_change_and_a_task_callback(
    llm: KalibrLLM, intel: Intelligence, implementations: Implementations, stored: Stored
) -> None:
    tool = research_tool(intel, implementations)
    crew = research_crew(llm, tool, task_callback=report_task_outcome)

    result = crew.kickoff()

    assert result.raw
    (agent_outcome,) = stored(AGENT_GOAL)
    assert agent_outcome.success
    quick = implementations.calls["research_quick"]
    assert Counter((o.model_id, o.success) for o in stored(TOOL_GOAL)) == Counter(
        {("research_quick", False): quick, ("research_thorough", True): 1 - quick}
    )
    assert llm.get_token_usage_summary().successful_requests == 2  # tool call, then answer


def test_react_text_format_with_stop_words(
    sim: ProviderSimulator, intel: Intelligence, implementations: Implementations, stored: Stored
) -> None:
    llm = KalibrLLM(
        goal=AGENT_GOAL,
        paths=["gpt-4o", "claude-haiku-4-5"],
        intelligence=intel,
        function_calling=False,
    )
    crew = research_crew(
        llm,
        research_tool(intel, implementations),
        task_kwargs={"guardrail": reporting_guardrail(has_findings), "guardrail_max_retries": 8},
    )

    result = crew.kickoff()

    assert result.raw == "Agent frameworks: first finding. Second finding. Third finding."
    assert implementations.calls["research_thorough"] == 1
    agent_outcomes = stored(AGENT_GOAL)
    assert agent_outcomes[-1].success
    assert len(agent_outcomes) == implementations.calls.total()  # one tool call per attempt


def test_a_step_callback_reports_the_final_answer(
    llm: KalibrLLM, intel: Intelligence, implementations: Implementations, stored: Stored
) -> None:
    def final_answer_has_findings(step: Any) -> bool | None:
        if not isinstance(step, AgentFinish):
            return None
        return "finding" in str(step.output)

    # CrewAI warns that a callable object cannot be checkpointed; that is CrewAI's rule.
    with pytest.warns(UserWarning, match="cannot be serialized"):
        callback = step_outcome_callback(final_answer_has_findings)
        crew = research_crew(
            llm, research_tool(intel, implementations), agent_kwargs={"step_callback": callback}
        )

    crew.kickoff()

    (agent_outcome,) = stored(AGENT_GOAL)
    assert agent_outcome.success is (implementations.calls["research_thorough"] == 1)


def test_a_task_callback_can_score_the_output(
    llm: KalibrLLM, intel: Intelligence, implementations: Implementations, stored: Stored
) -> None:
    with pytest.warns(UserWarning, match="cannot be serialized"):
        crew = research_crew(
            llm,
            research_tool(intel, implementations),
            task_kwargs={
                "guardrail": reporting_guardrail(has_findings, final=False),
                "guardrail_max_retries": 8,
                "callback": task_outcome_callback(lambda output: 0.75),
            },
        )

    crew.kickoff()

    agent_outcomes = stored(AGENT_GOAL)
    assert [o.success for o in agent_outcomes[:-1]] == [False] * (len(agent_outcomes) - 1)
    assert (agent_outcomes[-1].success, agent_outcomes[-1].score) == (True, 0.75)


def test_two_tasks_report_their_own_calls(
    llm: KalibrLLM, intel: Intelligence, implementations: Implementations, stored: Stored
) -> None:
    tool = research_tool(intel, implementations)
    researcher = Agent(
        role="Research Analyst",
        goal="Research topics",
        backstory="Expert",
        tools=[tool],
        llm=llm,
    )
    first = Task(
        description="Research the history of AI agent frameworks",
        expected_output="A history",
        agent=researcher,
        guardrail=reporting_guardrail(has_findings),
        guardrail_max_retries=8,
    )
    second = Task(
        description="Summarise the research in one paragraph",
        expected_output="A paragraph",
        agent=researcher,
        guardrail=reporting_guardrail(lambda output: (False, "never good enough")),
        guardrail_max_retries=1,
    )

    with pytest.raises(Exception, match="never good enough"):
        Crew(agents=[researcher], tasks=[first, second]).kickoff()

    agent_outcomes = stored(AGENT_GOAL)
    # The first task ends with a pass; the second task's two attempts are both blocked.
    assert [o.success for o in agent_outcomes[-3:]] == [True, False, False]
    assert [o.failure_reason for o in agent_outcomes[-2:]] == ["never good enough"] * 2


def test_routing_moves_the_agent_to_the_model_that_passes_the_guardrail(
    sim: ProviderSimulator, intel: Intelligence
) -> None:
    sim.set_script("crew-sloppy", ModelScript(accuracy=0.0))  # garbles the tool's findings
    sim.set_script("crew-careful", ModelScript(accuracy=1.0))
    llm = KalibrLLM(goal="crew_learning", paths=["crew-sloppy", "crew-careful"], intelligence=intel)
    tool = KalibrRouteTool(
        goal="crew_learning_tool",
        description="Research a topic",
        paths=[Implementations().research_thorough],
        intelligence=intel,
    )
    for _ in range(12):
        research_crew(
            llm,
            tool,
            task_kwargs={
                "guardrail": reporting_guardrail(has_findings),
                "guardrail_max_retries": 10,
            },
        ).kickoff()
    intel.flush()
    paths = {p["model_id"]: p for p in intel.stats("crew_learning")["paths"]}
    assert paths["crew-sloppy"]["success_rate"] == 0.0
    assert paths["crew-careful"]["success_rate"] == 1.0
    assert paths["crew-careful"]["sample_count"] == 12
    assert paths["crew-careful"]["decisions"] > 2 * paths["crew-sloppy"]["decisions"]


class Overview(BaseModel):
    summary: str


@pytest.mark.asyncio
async def test_akickoff_with_structured_output_goes_through_acall(
    llm: KalibrLLM,
    intel: Intelligence,
    implementations: Implementations,
    stored: Stored,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: Counter[str] = Counter()
    for name in ("call", "acall"):
        method = getattr(KalibrLLM, name)

        def counting(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _method(*args, **kwargs)

        monkeypatch.setattr(KalibrLLM, name, counting)
    crew = research_crew(
        llm,
        research_tool(intel, implementations),
        task_kwargs={"output_pydantic": Overview},
        task_callback=report_task_outcome,
    )

    result = await crew.akickoff()

    assert isinstance(result.pydantic, Overview)
    # CrewAI's agent loop calls call() (in a worker thread); its async converter, acall().
    assert calls["acall"] == 1
    assert calls["call"] >= 2
    (agent_outcome,) = stored(AGENT_GOAL)  # the converter's call stayed on the task's path
    assert agent_outcome.success
    quick = implementations.calls["research_quick"]
    assert Counter((o.model_id, o.success) for o in stored(TOOL_GOAL)) == Counter(
        {("research_quick", False): quick, ("research_thorough", True): 1 - quick}
    )

"""CrewAI with kalibr-core, offline: a routed agent and a routed research tool.

The article's pattern: two functions do the same research job with different models; the agent
sees one tool, and kalibr routes each call to the function that works, judged by a success
function. The agent's own LLM is routed too (``KalibrLLM``), and the task guardrail reports
whether each attempt's work was good. After its fourth request, gpt-4o starts answering
off-topic (no exception, just bad answers): traffic moves to Claude without any change to the
crew.

Run: ``pip install -e integrations/crewai`` once, then ``python examples/crewai_example.py``.
Everything runs against the built-in provider simulator (no API keys, no network).
"""

from __future__ import annotations

import os

# Keep CrewAI itself offline too (telemetry, trace uploads, version check).
os.environ.update(
    CREWAI_DISABLE_TELEMETRY="true",
    OTEL_SDK_DISABLED="true",
    CREWAI_TRACING_ENABLED="false",
    CREWAI_DISABLE_VERSION_CHECK="true",
)

from collections import Counter
from typing import Any

import anthropic
import openai
from crewai import Agent, Crew, Task
from crewai.tasks.task_output import TaskOutput
from crewai_kalibr import KalibrLLM, KalibrRouteTool, reporting_guardrail
from pydantic import BaseModel, Field

from kalibr_core import Intelligence
from kalibr_core.simulator import ModelScript, ProviderSimulator, Schedule

SYSTEM = "You are a research assistant. Answer thoroughly with sources when possible."
served: Counter[str] = Counter()


class ResearchInput(BaseModel):
    query: str = Field(description="The research query to answer")


def research_with_gpt4o(query: str) -> str | None:
    """Research through OpenAI (the simulator, via OPENAI_BASE_URL)."""
    served["research_with_gpt4o"] += 1
    try:
        response = openai.OpenAI(max_retries=0).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": query}],
            timeout=30,
        )
    except openai.OpenAIError:
        return None
    return response.choices[0].message.content


def research_with_claude(query: str) -> str | None:
    """Research through Anthropic (the simulator, via ANTHROPIC_BASE_URL)."""
    served["research_with_claude"] += 1
    try:
        response = anthropic.Anthropic(max_retries=0).messages.create(
            model="claude-sonnet-4-5",
            max_tokens=1024,
            messages=[{"role": "user", "content": f"Research and answer: {query}"}],
        )
    except anthropic.AnthropicError:
        return None
    block = response.content[0] if response.content else None
    return getattr(block, "text", None)


def is_research_complete(result: str | None) -> bool:
    """A real success check: research about agent frameworks must talk about agents."""
    return bool(result) and "agent" in str(result).lower()


def mentions_agents(output: TaskOutput) -> tuple[bool, Any]:
    """The task guardrail: the agent's final answer must be about agents."""
    if "agent" in output.raw.lower():
        return True, output.raw
    return False, "The answer is not about AI agents; research again."


def main() -> None:
    """Run the crew sixteen times while gpt-4o starts answering off-topic."""
    scripts = {
        "gpt-4o": ModelScript(accuracy=Schedule.step(at=4, before=1.0, after=0.0)),
        "claude-sonnet-4-5": ModelScript(accuracy=0.95),
    }
    with ProviderSimulator(scripts, seed=5) as sim:
        os.environ.update(
            OPENAI_BASE_URL=sim.openai_base_url,
            OPENAI_API_KEY="sim",
            ANTHROPIC_BASE_URL=sim.anthropic_base_url,
            ANTHROPIC_API_KEY="sim",
        )
        intel = Intelligence(":memory:", seed=11)
        research_tool = KalibrRouteTool(
            goal="research",
            name="research_tool",
            description="Research a topic or answer a question thoroughly",
            args_schema=ResearchInput,
            paths=[research_with_gpt4o, research_with_claude],
            success_when=is_research_complete,
            intelligence=intel,
        )
        # The one-line change: llm=KalibrLLM(...) instead of llm="gpt-4o-mini".
        llm = KalibrLLM(
            goal="research_agent", paths=["gpt-4o-mini", "claude-haiku-4-5"], intelligence=intel
        )
        researcher = Agent(
            role="Research Analyst",
            goal="Research topics thoroughly and accurately",
            backstory="Expert at finding and synthesizing information",
            tools=[research_tool],
            llm=llm,
        )
        for run in range(1, 17):
            before = served.copy()
            task = Task(
                description="Research the current state of AI agent frameworks",
                expected_output="A comprehensive overview of major AI agent frameworks",
                agent=researcher,
                guardrail=reporting_guardrail(mentions_agents),
                guardrail_max_retries=5,
            )
            Crew(agents=[researcher], tasks=[task]).kickoff()
            used = ", ".join(f"{name} x{n}" for name, n in (served - before).items())
            print(f"run {run:>2}: research served by {used}")
        intel.flush()
        for goal in ("research", "research_agent"):
            for path in intel.stats(goal)["paths"]:
                print(
                    f"{goal:<15} {path['model_id']:<22} {path['success_rate']:.0%} over "
                    f"{path['sample_count']} outcomes"
                )
        intel.close()


if __name__ == "__main__":
    main()

"""crewai-kalibr: outcome-based routing for CrewAI agents and tools, by kalibr-core.

Change one line, ``Agent(llm=KalibrLLM(goal=..., paths=[...]))``, and each task runs on the
path that works; route a tool between implementations with :class:`KalibrRouteTool`. The
outcomes come from where CrewAI already decides whether the work was good: wrap a task
guardrail with :func:`reporting_guardrail`, or set :func:`report_task_outcome` as the task
callback.

Example:
    >>> from crewai import Agent, Task
    >>> from crewai_kalibr import KalibrLLM, reporting_guardrail
    >>> llm = KalibrLLM(goal="research", paths=["gpt-4o", "claude-haiku-4-5"])  # doctest: +SKIP
    >>> agent = Agent(role="Researcher", goal="...", backstory="...", llm=llm)  # doctest: +SKIP
    >>> task = Task(description="...", expected_output="...", agent=agent,
    ...             guardrail=reporting_guardrail(my_check))  # doctest: +SKIP
"""

from __future__ import annotations

from crewai_kalibr._llm import KalibrLLM
from crewai_kalibr._outcomes import (
    StepOutcomeCallback,
    TaskOutcomeCallback,
    Verdict,
    report_task,
    report_task_outcome,
    reporting_guardrail,
    step_outcome_callback,
    task_outcome_callback,
)
from crewai_kalibr._tool import KalibrRouteTool
from crewai_kalibr._version import __version__

__all__ = [
    "KalibrLLM",
    "KalibrRouteTool",
    "StepOutcomeCallback",
    "TaskOutcomeCallback",
    "Verdict",
    "__version__",
    "report_task",
    "report_task_outcome",
    "reporting_guardrail",
    "step_outcome_callback",
    "task_outcome_callback",
]

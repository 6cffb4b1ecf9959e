"""The public surface of crewai_kalibr, pinned."""

from __future__ import annotations

import crewai_kalibr

PUBLIC = [
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


def test_the_public_names_are_pinned() -> None:
    assert sorted(crewai_kalibr.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(crewai_kalibr, name) is not None


def test_every_public_name_is_documented() -> None:
    for name in PUBLIC:
        if name != "__version__":
            assert getattr(crewai_kalibr, name).__doc__, name

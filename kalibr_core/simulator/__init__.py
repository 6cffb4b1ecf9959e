"""An offline provider simulator: a loopback HTTP server speaking real provider wire protocols.

Point the real ``openai``, ``anthropic`` and ``huggingface_hub`` SDKs at a
:class:`ProviderSimulator` and every model behaves as its :class:`ModelScript` says: how often it
is right (a :class:`Schedule` over its request number), how slow it is, and which failures it
injects. Answers are real for a few task families (company extraction, arithmetic, sentiment),
so success checks test real content; see :func:`expected_answer` and :func:`check_answer`.

Example::

    from kalibr_core.simulator import ModelScript, ProviderSimulator, Schedule

    scripts = {"gpt-4o": ModelScript(accuracy=Schedule.step(at=50, before=0.95, after=0.3))}
    with ProviderSimulator(models=scripts, seed=7) as sim:
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sim", max_retries=0)
"""

from __future__ import annotations

from kalibr_core.simulator._scripts import ERROR_KINDS, ModelScript, Schedule
from kalibr_core.simulator._server import HF_TASKS, ModelStats, ProviderSimulator, RequestRecord
from kalibr_core.simulator._tasks import (
    CompanyExample,
    check_answer,
    company_extraction_examples,
    count_tokens,
    expected_answer,
    task_family,
)

__all__ = [
    "ERROR_KINDS",
    "HF_TASKS",
    "CompanyExample",
    "ModelScript",
    "ModelStats",
    "ProviderSimulator",
    "RequestRecord",
    "Schedule",
    "check_answer",
    "company_extraction_examples",
    "count_tokens",
    "expected_answer",
    "task_family",
]

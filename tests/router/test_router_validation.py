"""Every misuse of the Router API is refused up front with a ValidationError that says why."""

from __future__ import annotations

from typing import Any

import pytest

from kalibr_core import Intelligence, ValidationError
from kalibr_core.router import Router
from kalibr_core.simulator import ProviderSimulator

SUM = [{"role": "user", "content": "What is 17 + 25?"}]


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"goal": ""}, "goal", "invalid goal"),
        ({"goal": "has spaces"}, "goal", "invalid goal"),
        ({"goal": 42}, "goal", "must be a string"),
        ({"paths": []}, "paths", "non-empty list"),
        ({"paths": "gpt-4o"}, "paths", "non-empty list"),
        ({"paths": None}, "paths", "non-empty list"),
        ({"paths": ["gpt-4o", "gpt-4o"]}, "paths", "duplicate path 'gpt-4o'"),
        (
            {
                "paths": [
                    {"model": "gpt-4o", "params": {"t": 1}},
                    {"model": "gpt-4o", "params": {"t": 1}},
                ]
            },
            "paths",
            "duplicate path",
        ),
        ({"paths": [""]}, "model_id", "non-empty model string"),
        ({"paths": [{"tools": ["x"]}]}, "model_id", "non-empty model string"),
        ({"paths": [{"model": "gpt-4o", "temperature": 0.2}]}, "paths", "unknown path keys"),
        ({"paths": [3]}, "paths", "model string or a dict"),
        ({"success_when": "yes"}, "success_when", "must be callable"),
        ({"score_when": 0.5}, "score_when", "must be callable"),
        ({"exploration_rate": 1.5}, "exploration_rate", "between 0 and 1"),
        ({"exploration_rate": -0.1}, "exploration_rate", "between 0 and 1"),
        ({"exploration_rate": True}, "exploration_rate", "between 0 and 1"),
        ({"pipeline_id": "bad pipeline"}, "pipeline_id", "invalid pipeline_id"),
    ],
)
def test_bad_router_arguments(
    intel: Intelligence, kwargs: dict[str, Any], field: str, message: str
) -> None:
    arguments: dict[str, Any] = {"goal": "validation", "paths": ["gpt-4o"], **kwargs}
    with pytest.raises(ValidationError, match=message) as caught:
        Router(intelligence=intel, **arguments)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("call", "field", "message"),
    [
        ({"messages": "What is 17 + 25?"}, "messages", "non-empty list"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": [{"content": "no role"}]}, "messages", r"messages\[0\].*'role'"),
        ({"messages": [*SUM, "plain text"]}, "messages", r"messages\[1\]"),
        ({"max_tokens": 0}, "max_tokens", "positive integer"),
        ({"max_tokens": -5}, "max_tokens", "positive integer"),
        ({"max_tokens": 2.5}, "max_tokens", "positive integer"),
        ({"max_tokens": True}, "max_tokens", "positive integer"),
        ({"force_model": ""}, "force_model", "model string"),
        ({"force_model": 4}, "force_model", "model string"),
    ],
)
def test_bad_completion_arguments_are_refused_before_any_call(
    intel: Intelligence, call: dict[str, Any], field: str, message: str
) -> None:
    # No simulator and no keys: a refused call must not reach a provider, or need one.
    router = Router("validation", ["gpt-4o"], intelligence=intel)
    arguments: dict[str, Any] = {"messages": SUM, **call}

    with pytest.raises(ValidationError, match=message) as caught:
        router.completion(**arguments)

    assert caught.value.field == field
    assert caught.value.goal == "validation"
    assert intel.store.outcomes_in_window(intel.tenant, "validation", 0) == []


@pytest.mark.simulator
def test_a_refused_call_leaves_nothing_to_report(
    sim_env: ProviderSimulator, intel: Intelligence
) -> None:
    """The next report() covers the next real call, with its cost and latency."""
    router = Router("refused_then_real", ["gpt-4o"], intelligence=intel)
    with pytest.raises(ValidationError):
        router.completion(SUM, max_tokens=0)
    with pytest.raises(ValidationError):
        router.report(success=True, score=float("nan"))

    response = router.completion(SUM)
    router.report(success=True)

    intel.flush()
    [outcome] = intel.store.outcomes_in_window(intel.tenant, "refused_then_real", 0)
    assert outcome.trace_id == response.kalibr_trace_id
    assert outcome.latency_ms is not None
    assert outcome.output_tokens == response.usage.completion_tokens


@pytest.mark.parametrize(
    ("report", "field"),
    [
        ({"success": "yes"}, "success"),
        ({"success": 1}, "success"),
        ({"success": True, "score": "high"}, "score"),
        ({"success": True, "score": float("inf")}, "score"),
        ({"success": False, "reason": 404}, "reason"),
        ({"success": False, "failure_category": "slow"}, "failure_category"),
        ({"success": True, "trace_id": "not a trace id"}, "trace_id"),
    ],
)
def test_bad_report_arguments(intel: Intelligence, report: dict[str, Any], field: str) -> None:
    router = Router("validation", ["gpt-4o"], intelligence=intel)
    with pytest.raises(ValidationError) as caught:
        router.report(**report)
    assert caught.value.field == field


def test_async_completion_validates_the_same_way(intel: Intelligence) -> None:
    import asyncio

    router = Router("validation", ["gpt-4o"], intelligence=intel)
    with pytest.raises(ValidationError, match="positive integer"):
        asyncio.run(router.acompletion(SUM, max_tokens=0))
    with pytest.raises(ValidationError, match="non-empty list"):
        asyncio.run(router.acompletion([]))

"""KalibrLLM against the provider simulator: CrewAI's BaseLLM contract, routed."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from crewai import Agent, Task
from crewai.hooks import (
    LLMCallHookContext,
    register_after_llm_call_hook,
    register_before_llm_call_hook,
    unregister_after_llm_call_hook,
    unregister_before_llm_call_hook,
)
from crewai.llms.base_llm import BaseLLM, LLMCallBlockedError
from crewai.utilities.agent_utils import extract_tool_call_info, is_tool_call_list
from crewai.utilities.exceptions.context_window_exceeding_exception import (
    LLMContextLengthExceededError,
)
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from crewai_kalibr import KalibrLLM, report_task
from crewai_kalibr._outcomes import TASK_CALLS, Verdict
from kalibr_core import ContextExceededError, Intelligence, ProviderError
from kalibr_core.router import Router
from kalibr_core.simulator import ModelScript, ProviderSimulator, Schedule

from .conftest import Stored

ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    },
}


@pytest.fixture
def llm(sim: ProviderSimulator, intel: Intelligence) -> KalibrLLM:
    return KalibrLLM(goal="crew_llm", paths=["gpt-4o", "claude-haiku-4-5"], intelligence=intel)


@pytest.fixture
def task() -> Iterator[Task]:
    """A CrewAI task for ``from_task`` (its calls are cleared from the ledger afterwards)."""
    task = Task(description="Answer the question", expected_output="An answer")
    yield task
    TASK_CALLS.report(str(task.id), Verdict(True))


class Spy:
    """Records the keyword arguments of a Router's completions."""

    def __init__(self, router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict[str, Any]] = []
        for name in ("completion", "acompletion"):
            original = getattr(router, name)

            def spy(messages: Any, *, _original: Any = original, **kwargs: Any) -> Any:
                self.calls.append({"messages": messages, **kwargs})
                return _original(messages, **kwargs)

            monkeypatch.setattr(router, name, spy)


def test_a_goal_and_paths_make_a_crewai_llm(llm: KalibrLLM) -> None:
    assert isinstance(llm, BaseLLM)
    assert (llm.model, llm.provider, llm.goal) == ("kalibr/crew_llm", "kalibr", "crew_llm")
    assert [spec.model_id for spec in llm.routed.paths] == ["gpt-4o", "claude-haiku-4-5"]
    assert llm.supports_function_calling()
    assert llm.supports_stop_words()
    assert llm.additional_params == {}


def test_a_ready_router_can_be_given(intel: Intelligence) -> None:
    router = Router("crew_llm", ["gpt-4o"], intelligence=intel)
    llm = KalibrLLM(router=router)
    assert llm.routed is router
    assert (llm.goal, llm.model) == ("crew_llm", "kalibr/crew_llm")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"goal": "g"}, "needs goal= and paths="),
        ({"paths": ["gpt-4o"]}, "needs goal= and paths="),
        ({"goal": "g", "paths": ["gpt-4o", "gpt-4o"]}, "duplicate path"),
        ({"goal": "g", "paths": ["gpt-4o"], "context_window_size": 0}, "greater than 0"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((PydanticValidationError, ValueError), match=message):
        KalibrLLM(**kwargs)


def test_router_options_belong_to_the_router(intel: Intelligence) -> None:
    router = Router("crew_llm", ["gpt-4o"], intelligence=intel)
    with pytest.raises(PydanticValidationError, match="give paths to the Router"):
        KalibrLLM(router=router, paths=["gpt-4o"])
    with pytest.raises(PydanticValidationError, match="not the router's"):
        KalibrLLM(router=router, goal="other")


def test_a_call_is_routed_and_answered(llm: KalibrLLM, intel: Intelligence) -> None:
    answer = llm.call("Summarise the history of the printing press")
    assert isinstance(answer, str)
    assert "printing" in answer.lower()
    decisions = intel.stats("crew_llm")["paths"]
    assert sum(path["decisions"] for path in decisions) == 1
    usage = llm.get_token_usage_summary()
    assert usage.successful_requests == 1
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0


def test_tool_calls_come_back_in_the_format_crewai_runs(llm: KalibrLLM) -> None:
    calls = llm.call("What is 17 + 25?", tools=[ADD_TOOL])
    assert isinstance(calls, list)
    assert is_tool_call_list(calls)
    call_id, name, arguments = extract_tool_call_info(calls[0])  # type: ignore[misc]
    assert call_id
    assert name == "add"
    assert json.loads(str(arguments)) == {"a": 17, "b": 25}


def test_bare_function_schemas_are_accepted(llm: KalibrLLM) -> None:
    calls = llm.call("What is 17 + 25?", tools=[ADD_TOOL["function"]])  # type: ignore[list-item]
    assert calls[0]["function"]["name"] == "add"


def test_available_functions_are_run_by_the_llm(llm: KalibrLLM) -> None:
    def add(a: float, b: float) -> str:
        return f"the sum is {a + b:g}"

    answer = llm.call("What is 17 + 25?", tools=[ADD_TOOL], available_functions={"add": add})
    assert answer == "the sum is 42"


def test_a_tool_result_is_relayed_as_the_answer(llm: KalibrLLM) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "What is 17 + 25?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 17, "b": 25}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "add", "content": "42"},
    ]
    assert llm.call(messages, tools=[ADD_TOOL]) == "42"


def test_stop_words_reach_the_provider_and_cut_the_answer(
    llm: KalibrLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(llm.routed, monkeypatch)
    llm.stop = ["\nObservation:", "never1", "never2", "never3", "short"]
    answer = llm.call("Write a short note about lighthouses")
    # OpenAI takes four stop sequences; the fifth is applied to the answer afterwards.
    assert spy.calls[0]["stop"] == ["\nObservation:", "never1", "never2", "never3"]
    assert "short" not in answer
    assert answer.strip()


def test_sampling_settings_and_extra_params_are_sent(
    sim: ProviderSimulator, intel: Intelligence, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = KalibrLLM(
        goal="crew_llm",
        paths=["gpt-4o"],
        intelligence=intel,
        temperature=0.2,
        max_tokens=50,
        seed=7,
        user="crew-1",
    )
    spy = Spy(llm.routed, monkeypatch)
    llm.call("Say hello")
    sent = spy.calls[0]
    assert (sent["temperature"], sent["max_tokens"], sent["seed"], sent["user"]) == (
        0.2,
        50,
        7,
        "crew-1",
    )


def test_crewai_message_keys_are_not_sent(llm: KalibrLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(llm.routed, monkeypatch)
    llm.call([{"role": "user", "content": "Say hello", "cache_breakpoint": True}])  # type: ignore[list-item]
    assert spy.calls[0]["messages"] == [{"role": "user", "content": "Say hello"}]


class Answer(BaseModel):
    answer: str


def test_structured_output_is_parsed(llm: KalibrLLM) -> None:
    result = llm.call("What is 17 + 25?", response_model=Answer)
    assert isinstance(result, Answer)
    assert result.answer == "42"


def test_the_context_window_is_the_smallest_of_the_paths(
    sim: ProviderSimulator, intel: Intelligence
) -> None:
    big = KalibrLLM(goal="crew_llm", paths=["claude-haiku-4-5"], intelligence=intel)
    mixed = KalibrLLM(goal="crew_llm", paths=["claude-haiku-4-5", "gpt-4o"], intelligence=intel)
    assert mixed.get_context_window_size() < big.get_context_window_size()
    assert mixed.get_context_window_size() == int(128_000 * 0.85)
    small = KalibrLLM(
        goal="crew_llm", paths=["gpt-4o"], context_window_size=1000, intelligence=intel
    )
    assert small.get_context_window_size() == 850
    assert small.is_context_window_overflowing_threshold("word " * 1000)
    assert not small.is_context_window_overflowing_threshold("word " * 100)


def test_a_context_overflow_is_crewais_error_and_a_routed_failure(
    sim: ProviderSimulator, intel: Intelligence, stored: Stored
) -> None:
    llm = KalibrLLM(goal="crew_small", paths=["crew-ctx16"], intelligence=intel)
    sim.set_script("crew-ctx16", ModelScript(context_window=16))
    with pytest.raises(LLMContextLengthExceededError) as caught:
        llm.call("word " * 200)
    assert isinstance(caught.value.__cause__, ContextExceededError)
    (outcome,) = stored("crew_small")
    assert (outcome.success, outcome.failure_category) == (False, "context_exceeded")


def test_function_calling_can_be_turned_off(sim: ProviderSimulator, intel: Intelligence) -> None:
    llm = KalibrLLM(goal="crew_llm", paths=["gpt-4o"], intelligence=intel, function_calling=False)
    assert not llm.supports_function_calling()


def test_a_task_attempt_stays_on_its_first_path(
    llm: KalibrLLM, task: Task, monkeypatch: pytest.MonkeyPatch, stored: Stored
) -> None:
    spy = Spy(llm.routed, monkeypatch)
    for _ in range(3):
        llm.call("Describe the tides", from_task=task)
    first = TASK_CALLS.pending(str(task.id))[0].path
    assert [call["force_model"] for call in spy.calls] == [None, first, first]

    assert report_task(True, task_id=str(task.id)) == 3
    (outcome,) = stored("crew_llm")  # one conversation on one path: one outcome
    assert (outcome.success, outcome.model_id) == (True, first)

    llm.call("Describe the tides", from_task=task)  # the next attempt is routed afresh
    assert spy.calls[-1]["force_model"] is None


def test_route_each_call_routes_every_call(
    sim: ProviderSimulator, intel: Intelligence, task: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = KalibrLLM(
        goal="crew_llm", paths=["gpt-4o", "gpt-4o-mini"], intelligence=intel, route_each_call=True
    )
    spy = Spy(llm.routed, monkeypatch)
    for _ in range(3):
        llm.call("Describe the tides", from_task=task)
    assert [call["force_model"] for call in spy.calls] == [None, None, None]
    assert len(TASK_CALLS.pending(str(task.id))) == 3


def test_a_failed_call_is_reported_and_the_next_one_routed_afresh(
    sim: ProviderSimulator,
    intel: Intelligence,
    task: Task,
    monkeypatch: pytest.MonkeyPatch,
    stored: Stored,
) -> None:
    sim.set_script(
        "crew-flaky", ModelScript(server_error=Schedule.piecewise([(0, 0.0), (1, 1.0), (2, 0.0)]))
    )
    llm = KalibrLLM(goal="crew_flaky", paths=["crew-flaky"], intelligence=intel)
    spy = Spy(llm.routed, monkeypatch)
    llm.call("Describe the tides", from_task=task)
    with pytest.raises(ProviderError):
        llm.call("Describe the tides", from_task=task)
    llm.call("Describe the tides", from_task=task)
    assert [call["force_model"] for call in spy.calls] == [None, "crew-flaky", None]
    (failure,) = stored("crew_flaky")
    assert (failure.success, failure.failure_category) == (False, "provider_error")


def test_success_when_judges_every_answer(
    sim: ProviderSimulator, intel: Intelligence, stored: Stored
) -> None:
    llm = KalibrLLM(
        goal="crew_judged",
        paths=["gpt-4o"],
        intelligence=intel,
        success_when=lambda text: "tides" in text.lower(),
    )
    llm.call("Describe the tides")
    llm.call("Describe the weather")
    assert [outcome.success for outcome in stored("crew_judged")] == [True, False]


@pytest.mark.asyncio
async def test_acall_is_routed_and_stays_on_the_tasks_path(
    llm: KalibrLLM, task: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(llm.routed, monkeypatch)
    first = await llm.acall("Describe the tides", from_task=task)
    calls = await llm.acall("What is 17 + 25?", tools=[ADD_TOOL], from_task=task)
    assert "tides" in first.lower()
    assert calls[0]["function"]["name"] == "add"
    path = TASK_CALLS.pending(str(task.id))[0].path
    assert [call["force_model"] for call in spy.calls] == [None, path]


def test_an_agent_keeps_the_llm_and_its_copies_share_the_router(llm: KalibrLLM) -> None:
    agent = Agent(role="Researcher", goal="Research", backstory="Expert", llm=llm)
    assert agent.llm is llm
    clone = copy.copy(llm)
    assert clone.routed is llm.routed
    assert clone.model_dump()["goal"] == "crew_llm"
    assert "router" not in clone.model_dump()


def test_crewais_llm_hooks_run_around_routed_calls(llm: KalibrLLM, intel: Intelligence) -> None:
    seen: list[int] = []

    def before(context: LLMCallHookContext) -> bool | None:
        seen.append(len(context.messages))
        return False if "forbidden" in str(context.messages) else None

    def after(context: LLMCallHookContext) -> str | None:
        return f"[reviewed] {context.response}"

    register_before_llm_call_hook(before)
    register_after_llm_call_hook(after)
    try:
        assert llm.call("Describe the tides").startswith("[reviewed] ")
        with pytest.raises(LLMCallBlockedError):
            llm.call("Something forbidden")
    finally:
        unregister_before_llm_call_hook(before)
        unregister_after_llm_call_hook(after)
    assert seen == [1, 1]
    paths = intel.stats("crew_llm")["paths"]
    assert sum(path["decisions"] for path in paths) == 1  # a blocked call is never routed

"""Path params and tools reach the provider; caller arguments win; tool calls round-trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kalibr_core import ConfigurationError, ProviderError
from kalibr_core.router import ToolRegistry, register_tool
from kalibr_core.router._chat import to_anthropic_messages
from kalibr_core.simulator import ProviderSimulator

STORY = "Tell me about the history of the harbour and its lighthouse keepers"
SUM = "What is 17 + 25?"
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def the_call(response: Any) -> tuple[str, dict[str, Any]]:
    [call] = response.choices[0].message.tool_calls
    return call.function.name, json.loads(call.function.arguments)


@pytest.mark.simulator
def test_path_params_reach_the_provider_and_caller_arguments_win(
    sim_env: ProviderSimulator, make_router: Any
) -> None:
    # The simulator truncates at max_tokens and cuts at stop sequences, and answers 400 to a
    # temperature above 2: what it does shows which value reached it.
    router = make_router(
        "params",
        [{"model": "gpt-4o", "params": {"max_tokens": 3, "stop": ["never-said"]}}],
    )
    wild = make_router("params_wild", [{"model": "gpt-4o", "params": {"temperature": 7}}])
    before = len(sim_env.records("gpt-4o"))

    from_path = router.completion(ask(STORY))
    caller_max = router.completion(ask(STORY), max_tokens=200)
    caller_stop = router.completion(ask(STORY), max_tokens=200, stop=["history"])
    caller_temperature = wild.completion(ask(STORY), temperature=0.2)

    assert from_path.choices[0].finish_reason == "length"
    assert from_path.usage.completion_tokens <= 3
    assert caller_max.choices[0].finish_reason == "stop"
    assert "history" in caller_max.choices[0].message.content
    assert caller_stop.choices[0].message.content
    assert caller_max.choices[0].message.content.startswith(caller_stop.choices[0].message.content)
    assert "history" not in caller_stop.choices[0].message.content
    assert caller_temperature.choices[0].finish_reason == "stop"
    assert [r.outcome for r in sim_env.records("gpt-4o")[before:]] == ["ok"] * 4


@pytest.mark.simulator
def test_a_path_param_the_provider_rejects_fails_the_call(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("params_rejected", [{"model": "gpt-4o", "params": {"temperature": 7}}])
    with pytest.raises(ProviderError, match="temperature"):
        router.completion(ask(STORY))
    [outcome] = stored("params_rejected")
    assert outcome.success is False
    assert outcome.params == {"temperature": 7}


@pytest.mark.simulator
@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-6"])
def test_path_tool_dicts_reach_the_provider(
    sim_env: ProviderSimulator, make_router: Any, model: str
) -> None:
    router = make_router("tool_dicts", [{"model": model, "tools": [ADD]}])

    response = router.completion(ask(SUM))

    assert response.choices[0].finish_reason == "tool_calls"
    assert response.choices[0].message.content in (None, "")
    assert the_call(response) == ("add", {"a": 17, "b": 25})


@pytest.mark.simulator
def test_tool_names_resolve_through_a_registry(
    sim_env: ProviderSimulator, make_router: Any
) -> None:
    registry = ToolRegistry()
    registry.add("add", description="Add two numbers.", parameters=ADD["function"]["parameters"])
    router = make_router("tool_names", [{"model": "gpt-4o", "tools": ["add"]}], tools=registry)

    assert the_call(router.completion(ask(SUM))) == ("add", {"a": 17, "b": 25})


@pytest.mark.simulator
def test_register_tool_builds_the_schema_from_a_typed_function(
    sim_env: ProviderSimulator, make_router: Any
) -> None:
    @register_tool
    def kalibr_router_test_sum(left: int, right: int) -> int:
        """Add two integers."""
        return left + right

    router = make_router(
        "tool_function", [{"model": "claude-haiku-4-5", "tools": ["kalibr_router_test_sum"]}]
    )

    assert the_call(router.completion(ask(SUM))) == (
        "kalibr_router_test_sum",
        {"left": 17, "right": 25},
    )


@pytest.mark.simulator
def test_caller_tools_win_over_the_path_tools(sim_env: ProviderSimulator, make_router: Any) -> None:
    router = make_router("tool_override", [{"model": "gpt-4o", "tools": [WEATHER]}])

    assert the_call(router.completion(ask(SUM)))[0] == "weather"
    assert the_call(router.completion(ask(SUM), tools=[ADD]))[0] == "add"
    plain = router.completion(ask(SUM), tool_choice="none")
    assert plain.choices[0].message.content == "42"


@pytest.mark.simulator
def test_an_unknown_tool_name_is_a_configuration_error_recorded_as_tool_error(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router("tool_unknown", [{"model": "gpt-4o", "tools": ["nobody_registered_this"]}])
    before = len(sim_env.records())

    with pytest.raises(ConfigurationError, match="nobody_registered_this"):
        router.completion(ask(SUM))

    assert len(sim_env.records()) == before
    [outcome] = stored("tool_unknown")
    assert (outcome.success, outcome.failure_category) == (False, "tool_error")


@pytest.mark.simulator
@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-6"])
def test_tool_call_round_trip(
    sim_env: ProviderSimulator, make_router: Any, stored: Any, model: str
) -> None:
    """assistant tool_calls -> tool message with tool_call_id -> the final answer."""
    router = make_router("tool_round_trip", [{"model": model, "tools": [ADD]}])
    conversation: list[dict[str, Any]] = [
        {"role": "system", "content": "Use the add tool for sums."},
        {"role": "user", "content": SUM},
    ]

    first = router.completion(conversation)
    [call] = first.choices[0].message.tool_calls
    conversation.append(first.choices[0].message.model_dump(exclude_none=True))
    conversation.append(
        {"role": "tool", "tool_call_id": call.id, "content": "add returned 42 (checked)"}
    )
    final = router.completion(conversation, force_model=model)
    router.report(success=True)

    # A correct simulated model relays the tool result it was given.
    assert final.choices[0].message.content == "add returned 42 (checked)"
    assert final.choices[0].finish_reason == "stop"
    # One conversation on one path: one outcome.
    [outcome] = stored("tool_round_trip")
    assert (outcome.trace_id, outcome.success) == (first.kalibr_trace_id, True)


def test_openai_tool_messages_map_to_anthropic_blocks_and_back() -> None:
    system, messages = to_anthropic_messages(
        [
            {"role": "system", "content": "Be exact."},
            {"role": "user", "content": SUM},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_01",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 17, "b": 25}'},
                    },
                    {
                        "id": "toolu_02",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 1, "b": 1}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_01", "content": "42"},
            {"role": "tool", "tool_call_id": "toolu_02", "content": "2"},
        ]
    )

    assert system == "Be exact."
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == [
        {"type": "tool_use", "id": "toolu_01", "name": "add", "input": {"a": 17, "b": 25}},
        {"type": "tool_use", "id": "toolu_02", "name": "add", "input": {"a": 1, "b": 1}},
    ]
    # Both results in one user turn, as Anthropic requires after parallel tool calls.
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "42"},
        {"type": "tool_result", "tool_use_id": "toolu_02", "content": "2"},
    ]


@pytest.mark.simulator
@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-6"])
def test_a_json_schema_response_format_reaches_every_provider(
    sim_env: ProviderSimulator, make_router: Any, model: str
) -> None:
    """OpenAI json_schema -> Anthropic output_config.format: both answer with the schema."""
    schema = {
        "type": "object",
        "properties": {"company": {"type": "string"}, "employees": {"type": "integer"}},
        "required": ["company", "employees"],
    }
    router = make_router("structured_" + model[:3], [model])
    response = router.completion(
        ask("Extract the company: Ana works at Stripe with 40 engineers."),
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )

    assert json.loads(response.choices[0].message.content) == {
        "company": "Stripe",
        "employees": 40,
    }

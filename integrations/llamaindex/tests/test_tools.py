"""Tool calling through Kalibr: predict_and_call, chat_with_tools, a tool loop and an agent.

The simulator calls the first tool offered with arguments built from its JSON schema
(``add(a=17, b=25)`` for "What is 17 + 25?") and, after a tool result, relays it.
"""

from __future__ import annotations

from typing import Any

import pytest
from kalibr_core.simulator import ProviderSimulator
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.tools import FunctionTool

pytestmark = pytest.mark.simulator

SUM = "What is 17 + 25?"
PATHS = ["gpt-4o-mini", "claude-haiku-4-5"]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


ADD = FunctionTool.from_defaults(fn=add)
MULTIPLY = FunctionTool.from_defaults(fn=multiply)


@pytest.mark.parametrize("model", PATHS)
def test_predict_and_call_runs_the_tool_the_model_chose(
    sim_env: ProviderSimulator, make_llm: Any, model: str
) -> None:
    llm = make_llm(f"predict_and_call_{model.split('-', maxsplit=1)[0]}", [model])

    result = llm.predict_and_call([ADD], user_msg=SUM)

    assert result.response == "42"
    [output] = result.sources
    assert (output.tool_name, output.raw_input["kwargs"], output.is_error) == (
        "add",
        {"a": 17, "b": 25},
        False,
    )


@pytest.mark.asyncio
async def test_apredict_and_call(sim_env: ProviderSimulator, make_llm: Any) -> None:
    llm = make_llm("apredict_and_call", PATHS)
    result = await llm.apredict_and_call([ADD], user_msg=SUM)
    assert result.response == "42"


def test_chat_with_tools_honours_tool_required_and_a_chosen_tool(
    sim_env: ProviderSimulator, make_llm: Any
) -> None:
    llm = make_llm("chat_with_tools", ["gpt-4o-mini"])

    required = llm.chat_with_tools([ADD, MULTIPLY], user_msg=SUM, tool_required=True)
    chosen = llm.chat_with_tools([ADD, MULTIPLY], user_msg="Use 6 and 7", tool_choice="multiply")

    [call] = llm.get_tool_calls_from_response(required)
    assert (call.tool_name, call.tool_kwargs) == ("add", {"a": 17, "b": 25})
    assert [c.tool_name for c in llm.get_tool_calls_from_response(chosen)] == ["multiply"]
    assert (
        llm.get_tool_calls_from_response(
            llm.chat([ChatMessage(content=SUM)]), error_on_no_tool_call=False
        )
        == []
    )
    with pytest.raises(ValueError, match="at least one tool call"):
        llm.get_tool_calls_from_response(llm.chat([ChatMessage(content=SUM)]))


def test_streamed_tool_calls_reassemble(sim_env: ProviderSimulator, make_llm: Any) -> None:
    llm = make_llm("stream_tools", PATHS)
    for model in PATHS:
        *_, last = llm.stream_chat_with_tools([ADD], user_msg=SUM, force_model=model)
        [call] = llm.get_tool_calls_from_response(last)
        assert (call.tool_name, call.tool_kwargs) == ("add", {"a": 17, "b": 25})
        assert last.message.additional_kwargs["tool_calls"][0].function.name == "add"


@pytest.mark.parametrize("model", PATHS)
def test_a_manual_tool_loop_sends_calls_and_results_back(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any, model: str
) -> None:
    goal = f"tool_loop_{model.split('-', maxsplit=1)[0]}"
    llm = make_llm(goal, [model], success_when=lambda out: out.strip() == "42")
    history = [ChatMessage(role=MessageRole.USER, content=SUM)]

    first = llm.chat_with_tools([ADD], chat_history=history)
    [call] = llm.get_tool_calls_from_response(first)
    history.append(first.message)
    history.append(
        ChatMessage(
            role=MessageRole.TOOL,
            content=str(add(**call.tool_kwargs)),
            additional_kwargs={"tool_call_id": call.tool_id, "name": call.tool_name},
        )
    )
    second = llm.chat_with_tools([ADD], chat_history=history)

    assert any(isinstance(b, ToolCallBlock) for b in first.message.blocks)
    assert second.message.content == "42"
    # The tool turn is part of the loop; the answering turn is judged and covers it.
    [outcome] = stored(goal)
    assert (outcome.trace_id, outcome.success) == (
        second.additional_kwargs["kalibr_trace_id"],
        True,
    )


# llama-index-workflows collects an agent's steps with inspect.getmembers, which reads
# deprecated pydantic attributes (``__fields__``...): their warnings, whatever the LLM.
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecationWarning")
@pytest.mark.asyncio
async def test_a_function_agent_runs_its_tool_loop_on_kalibr(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any
) -> None:
    llm = make_llm("agent_sum", PATHS, success_when=lambda out: "42" in out)
    agent = FunctionAgent(tools=[ADD], llm=llm, system_prompt="Use the tools to do arithmetic.")

    response = await agent.run(user_msg=SUM)

    assert str(response).strip() == "42"
    assert [call.tool_name for call in response.tool_calls] == ["add"]
    assert [o.success for o in stored("agent_sum")] == [True]

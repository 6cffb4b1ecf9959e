"""LangChain messages to the Router's OpenAI format, and routed answers back."""

from __future__ import annotations

import json

from kalibr_core.router import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    FunctionCall,
    Message,
    ToolCall,
    Usage,
)
from kalibr_core.router._types import ChoiceDelta, ChunkChoice
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_kalibr._messages import StreamConverter, chat_result, to_openai_messages


def test_tool_calls_and_tool_messages_keep_their_ids() -> None:
    messages = to_openai_messages(
        [
            SystemMessage("Use tools."),
            HumanMessage("What is 1 + 2?", name="ana"),
            AIMessage(
                "",
                tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1"}],
            ),
            ToolMessage(json.dumps({"result": 3}), name="add", tool_call_id="call_1"),
        ]
    )

    assert messages == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "name": "ana", "content": "What is 1 + 2?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "type": "function",
                    "id": "call_1",
                    "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"result": 3}'},
    ]


def test_provider_blocks_of_an_assistant_message_become_openai_text_and_tool_calls() -> None:
    [message] = to_openai_messages(
        [
            AIMessage(
                [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Let me add."},
                    {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 1}},
                ],
                tool_calls=[{"name": "add", "args": {"a": 1}, "id": "toolu_1"}],
            )
        ]
    )

    assert message["content"] == "Let me add."
    assert [call["id"] for call in message["tool_calls"]] == ["toolu_1"]


def _completion(**message: object) -> ChatCompletion:
    return ChatCompletion(
        id="chatcmpl-1",
        model="gpt-4o-2024-08-06",
        choices=[Choice(message=Message(**message), finish_reason="tool_calls")],
        usage=Usage(prompt_tokens=12, completion_tokens=5, total_tokens=17),
        kalibr_trace_id="trace-1",
        kalibr_path_id="path-1",
        kalibr_provider="openai",
        kalibr_cost_usd=0.001,
        kalibr_latency_ms=12.5,
        kalibr_decision="exploration",
    )


def test_an_answer_carries_its_trace_model_and_usage() -> None:
    response = _completion(
        content=None,
        tool_calls=[
            ToolCall(id="call_1", function=FunctionCall(name="add", arguments='{"a": 1}')),
            ToolCall(id="call_2", function=FunctionCall(name="add", arguments='{"a": ')),
        ],
    )

    [generation] = chat_result(response, "sums").generations
    message = generation.message

    assert isinstance(message, AIMessage)
    assert message.content == ""
    assert message.tool_calls == [
        {"name": "add", "args": {"a": 1}, "id": "call_1", "type": "tool_call"}
    ]
    [broken] = message.invalid_tool_calls
    assert (broken["id"], broken["args"]) == ("call_2", '{"a": ')
    assert message.usage_metadata == {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17}
    assert message.response_metadata == {
        "model_name": "gpt-4o-2024-08-06",
        "finish_reason": "tool_calls",
        "kalibr_trace_id": "trace-1",
        "kalibr_goal": "sums",
        "kalibr_provider": "openai",
        "kalibr_path_id": "path-1",
        "kalibr_decision": "exploration",
        "kalibr_cost_usd": 0.001,
        "kalibr_latency_ms": 12.5,
    }


def _chunk(
    content: str | None = None,
    tool_calls: list[dict[str, object]] | None = None,
    finish: str | None = None,
    usage: Usage | None = None,
) -> ChatCompletionChunk:
    choices = []
    if content is not None or tool_calls or finish:
        choices = [
            ChunkChoice(
                delta=ChoiceDelta(content=content, tool_calls=tool_calls),
                finish_reason=finish,  # type: ignore[arg-type]
            )
        ]
    return ChatCompletionChunk(
        model="claude-haiku-4-5", choices=choices, usage=usage, kalibr_trace_id="trace-2"
    )


def test_a_stream_adds_up_to_one_message_with_its_metadata_once() -> None:
    converter = StreamConverter("sums")
    routed = [
        _chunk(content=""),
        _chunk(
            tool_calls=[{"index": 0, "id": "toolu_1", "function": {"name": "add", "arguments": ""}}]
        ),
        _chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"a": 1, '}}]),
        _chunk(tool_calls=[{"index": 0, "function": {"arguments": '"b": 2}'}}]),
        _chunk(finish="tool_calls", usage=Usage(prompt_tokens=9, completion_tokens=4)),
    ]

    chunks = [c for c in map(converter.convert, routed) if c is not None]
    chunks.append(converter.last())
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk

    message = total.message
    assert message.tool_calls == [  # type: ignore[attr-defined]
        {"name": "add", "args": {"a": 1, "b": 2}, "id": "toolu_1", "type": "tool_call"}
    ]
    assert message.usage_metadata == {  # type: ignore[attr-defined]
        "input_tokens": 9,
        "output_tokens": 4,
        "total_tokens": 13,
    }
    assert message.response_metadata == {
        "model_name": "claude-haiku-4-5",
        "finish_reason": "tool_calls",
        "kalibr_trace_id": "trace-2",
        "kalibr_goal": "sums",
    }
    assert [c.message.chunk_position for c in chunks].count("last") == 1  # type: ignore[attr-defined]

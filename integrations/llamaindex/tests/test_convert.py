"""LlamaIndex messages, tools and responses to and from kalibr-core's OpenAI format (offline)."""

from __future__ import annotations

import pytest
from kalibr_core.router import ChatCompletion, Choice, FunctionCall, Message, ToolCall
from llama_index.core.base.llms.types import (
    AudioBlock,
    ChatMessage,
    ChatResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.tools import FunctionTool

from llama_index.llms.kalibr import _convert


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_roles_text_and_images_become_openai_messages() -> None:
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
        ChatMessage(role=MessageRole.DEVELOPER, content="Answer in English."),
        ChatMessage(
            role=MessageRole.USER,
            blocks=[
                TextBlock(text="What is in this picture?"),
                ImageBlock(url="https://example.com/cat.png"),
            ],
        ),
        ChatMessage(role=MessageRole.CHATBOT, content="A cat."),
    ]

    assert _convert.to_openai_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Answer in English."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        },
        {"role": "assistant", "content": "A cat."},
    ]


def test_tool_calls_and_results_become_openai_messages() -> None:
    call = ChatMessage(
        role=MessageRole.ASSISTANT,
        blocks=[
            ThinkingBlock(content="I should add."),
            TextBlock(text=""),
            ToolCallBlock(tool_call_id="call_1", tool_name="add", tool_kwargs={"a": 1, "b": 2}),
        ],
    )
    legacy = ChatMessage(
        role=MessageRole.ASSISTANT,
        content="",
        additional_kwargs={
            "tool_calls": [
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "add", "arguments": "{}"},
                },
                ToolCall(id="call_3", function=FunctionCall(name="add", arguments='{"a": 1}')),
            ]
        },
    )
    result = ChatMessage(
        role=MessageRole.TOOL, content="3", additional_kwargs={"tool_call_id": "call_1"}
    )

    converted = _convert.to_openai_messages([call, legacy, result])

    assert converted[0] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
            }
        ],
    }
    assert [c["id"] for c in converted[1]["tool_calls"]] == ["call_2", "call_3"]
    assert converted[2] == {"role": "tool", "content": "3", "tool_call_id": "call_1"}


def test_unsupported_content_and_anonymous_tool_results_are_refused() -> None:
    with pytest.raises(ValueError, match="AudioBlock"):
        _convert.to_openai_messages([ChatMessage(blocks=[AudioBlock(audio=b"RIFF", format="wav")])])
    with pytest.raises(ValueError, match="tool_call_id"):
        _convert.to_openai_messages([ChatMessage(role=MessageRole.TOOL, content="3")])


def test_tools_and_tool_choice() -> None:
    [spec] = _convert.to_openai_tools([FunctionTool.from_defaults(fn=add)])
    assert spec["type"] == "function"
    assert spec["function"]["name"] == "add"
    assert set(spec["function"]["parameters"]["properties"]) == {"a", "b"}
    assert _convert.to_openai_tool_choice(None, tool_required=False) == "auto"
    assert _convert.to_openai_tool_choice(None, tool_required=True) == "required"
    assert _convert.to_openai_tool_choice("none", tool_required=True) == "none"
    assert _convert.to_openai_tool_choice("add", tool_required=False) == {
        "type": "function",
        "function": {"name": "add"},
    }


def completion(content: str | None, *calls: tuple[str, str]) -> ChatCompletion:
    tool_calls = [
        ToolCall(id=f"call_{i}", function=FunctionCall(name=name, arguments=args))
        for i, (name, args) in enumerate(calls)
    ]
    return ChatCompletion(
        model="gpt-4o",
        choices=[Choice(message=Message(content=content, tool_calls=tool_calls or None))],
        kalibr_trace_id="t" * 32,
    )


def test_a_completion_becomes_a_chat_response_with_its_trace() -> None:
    response = _convert.chat_response(completion("42"), "sums")

    assert response.message.content == "42"
    assert response.raw.kalibr_trace_id == "t" * 32
    assert response.additional_kwargs["kalibr_trace_id"] == "t" * 32
    assert response.additional_kwargs["kalibr_goal"] == "sums"
    assert response.additional_kwargs["model"] == "gpt-4o"
    assert _convert.tool_selections(response, error_on_no_tool_call=False) == []


def test_tool_calls_are_read_from_blocks_and_from_legacy_kwargs() -> None:
    response = _convert.chat_response(
        completion(None, ("add", '{"a": 1, "b": 2}'), ("add", '{"a": 3')), "sums"
    )
    selections = _convert.tool_selections(response, error_on_no_tool_call=True)
    assert [(s.tool_id, s.tool_kwargs) for s in selections] == [
        ("call_0", {"a": 1, "b": 2}),
        ("call_1", {"a": 3}),  # a partial JSON from an interrupted stream still parses
    ]
    legacy = ChatResponse(
        message=ChatMessage(
            role=MessageRole.ASSISTANT,
            content="",
            additional_kwargs=response.message.additional_kwargs,
        )
    )
    assert [
        s.tool_kwargs for s in _convert.tool_selections(legacy, error_on_no_tool_call=True)
    ] == [
        {"a": 1, "b": 2},
        {"a": 3},
    ]

    _convert.keep_first_tool_call(response)
    assert [s.tool_id for s in _convert.tool_selections(response, error_on_no_tool_call=True)] == [
        "call_0"
    ]
    assert len(response.message.additional_kwargs["tool_calls"]) == 1

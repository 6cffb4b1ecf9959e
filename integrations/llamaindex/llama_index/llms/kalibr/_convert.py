"""LlamaIndex chat types to and from kalibr-core's OpenAI-format messages, tools and responses.

Tool calls travel both ways in the two forms LlamaIndex uses: ``ToolCallBlock`` content blocks
(llama-index-core 0.14) and ``message.additional_kwargs["tool_calls"]`` (older code, streaming
structured outputs and chat engines still read it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kalibr_core.router import ChatCompletion, ChatCompletionChunk, FunctionCall, ToolCall
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
)
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.utils import parse_partial_json

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

try:  # llama-index-core >= 0.14
    from llama_index.core.base.llms.types import ThinkingBlock, ToolCallBlock
except ImportError:  # pragma: no cover - older cores carry tool calls in additional_kwargs only
    ThinkingBlock = ToolCallBlock = None  # type: ignore[assignment,misc]

_ROLES: Mapping[str, str] = {
    MessageRole.SYSTEM.value: "system",
    MessageRole.DEVELOPER.value: "developer",
    MessageRole.USER.value: "user",
    MessageRole.ASSISTANT.value: "assistant",
    MessageRole.TOOL.value: "tool",
    MessageRole.FUNCTION.value: "tool",
    MessageRole.CHATBOT.value: "assistant",
    MessageRole.MODEL.value: "assistant",
}
_TOOL_CHOICES = frozenset({"auto", "none", "required"})


# -- requests -----------------------------------------------------------------------------------
def to_openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex chat messages as OpenAI-format message dicts.

    Raises:
        ValueError: a message holds a content block kalibr-core cannot send (audio, video,
            documents), or a tool message has no ``tool_call_id``.
    """
    return [_to_openai_message(message) for message in messages]


def _to_openai_message(message: ChatMessage) -> dict[str, Any]:
    role = _ROLES.get(MessageRole(message.role).value, "user")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            url = str(block.url) if block.url is not None else block.inline_url()
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif ToolCallBlock is not None and isinstance(block, ToolCallBlock):
            calls.append(_openai_call(block.tool_call_id, block.tool_name, block.tool_kwargs))
        elif ThinkingBlock is not None and isinstance(block, ThinkingBlock):
            continue  # reasoning stays with the model that produced it
        else:
            raise ValueError(
                f"Kalibr cannot send a {type(block).__name__} in a {role} message; "
                "text, images and tool calls are supported"
            )
    if not calls:
        calls = [
            _openai_call_from_legacy(c) for c in message.additional_kwargs.get("tool_calls") or []
        ]
    result: dict[str, Any] = {"role": role, "content": _content(parts)}
    if role == "assistant" and calls:
        result["tool_calls"] = calls
        result["content"] = result["content"] or None
    if role == "tool":
        tool_call_id = message.additional_kwargs.get("tool_call_id")
        if not tool_call_id:
            raise ValueError("a tool message needs additional_kwargs['tool_call_id']")
        result["tool_call_id"] = str(tool_call_id)
    return result


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(part["type"] == "text" for part in parts):
        return "\n".join(part["text"] for part in parts)
    return parts


def _openai_call(
    call_id: str | None, name: str, arguments: Mapping[str, Any] | str
) -> dict[str, Any]:
    encoded = arguments if isinstance(arguments, str) else json.dumps(dict(arguments))
    return {
        "id": call_id or "",
        "type": "function",
        "function": {"name": name, "arguments": encoded or "{}"},
    }


def _openai_call_from_legacy(call: Any) -> dict[str, Any]:
    """An OpenAI SDK tool call object, a kalibr ToolCall or a plain dict, as a dict."""
    if isinstance(call, Mapping):
        function = call.get("function") or {}
        return _openai_call(
            call.get("id"), function.get("name", ""), function.get("arguments", "{}")
        )
    function = call.function
    return _openai_call(call.id, function.name, function.arguments or "{}")


def to_openai_tools(tools: Sequence[BaseTool]) -> list[dict[str, Any]]:
    """LlamaIndex tools as OpenAI function tools."""
    return [tool.metadata.to_openai_tool(skip_length_check=True) for tool in tools]


def to_openai_tool_choice(tool_choice: str | Mapping[str, Any] | None, tool_required: bool) -> Any:
    """LlamaIndex's ``tool_choice`` (a mode, a tool name or an OpenAI dict) in OpenAI's form."""
    if tool_choice is None:
        return "required" if tool_required else "auto"
    if isinstance(tool_choice, str) and tool_choice not in _TOOL_CHOICES:
        return {"type": "function", "function": {"name": tool_choice}}
    return tool_choice


# -- responses ----------------------------------------------------------------------------------
def chat_response(completion: ChatCompletion, goal: str) -> ChatResponse:
    """A routed completion as a LlamaIndex ChatResponse (the completion is its ``raw``)."""
    message = completion.choices[0].message if completion.choices else None
    content = message.content if message is not None else None
    calls = list(message.tool_calls or []) if message is not None else []
    usage = completion.usage
    return ChatResponse(
        message=_assistant_message(content or "", calls),
        raw=completion,
        additional_kwargs={
            **response_metadata(goal, completion.kalibr_trace_id, completion.model),
            "kalibr_decision": completion.kalibr_decision,
            "kalibr_cost_usd": completion.kalibr_cost_usd,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
    )


def response_metadata(goal: str, trace_id: str, model: str | None) -> dict[str, Any]:
    """What every response says about its routed call (``kalibr_trace_id`` to report)."""
    return {"kalibr_goal": goal, "kalibr_trace_id": trace_id, "model": model}


def _assistant_message(content: str, calls: Sequence[ToolCall]) -> ChatMessage:
    blocks: list[Any] = [TextBlock(text=content)]
    if ToolCallBlock is not None:
        blocks += [
            ToolCallBlock(
                tool_call_id=call.id,
                tool_name=call.function.name,
                tool_kwargs=_arguments(call.function.arguments),
            )
            for call in calls
        ]
    extra = {"tool_calls": list(calls)} if calls else {}
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=extra)


def _arguments(encoded: str) -> dict[str, Any] | str:
    """Decoded tool arguments; the raw text when they are not a JSON object."""
    try:
        value = json.loads(encoded or "{}")
    except ValueError:
        return encoded
    return value if isinstance(value, dict) else encoded


class StreamAssembler:
    """Turns routed stream chunks into cumulative LlamaIndex ChatResponses."""

    def __init__(self, goal: str, trace_id: str) -> None:
        self._goal = goal
        self._trace_id = trace_id
        self._text: list[str] = []
        self._calls: dict[int, dict[str, str]] = {}
        self._usage: dict[str, int] = {}

    def add(self, chunk: ChatCompletionChunk) -> ChatResponse:
        """The response so far, with this chunk's text as ``delta``."""
        delta_text = ""
        for choice in chunk.choices[:1]:
            delta_text = choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                slot = self._calls.setdefault(
                    int(delta.get("index", 0)), {"id": "", "name": "", "arguments": ""}
                )
                function = delta.get("function") or {}
                slot["id"] = delta.get("id") or slot["id"]
                slot["name"] = function.get("name") or slot["name"]
                slot["arguments"] += function.get("arguments") or ""
        self._text.append(delta_text)
        if chunk.usage is not None:
            self._usage = {
                "prompt_tokens": chunk.usage.prompt_tokens,
                "completion_tokens": chunk.usage.completion_tokens,
                "total_tokens": chunk.usage.total_tokens,
            }
        calls = [
            ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"]))
            for _, c in sorted(self._calls.items())
        ]
        return ChatResponse(
            message=_assistant_message("".join(self._text), calls),
            delta=delta_text,
            raw=chunk,
            additional_kwargs={
                **response_metadata(self._goal, self._trace_id, chunk.model),
                **self._usage,
            },
        )


def tool_selections(response: ChatResponse, *, error_on_no_tool_call: bool) -> list[ToolSelection]:
    """The tool calls of a response as LlamaIndex ToolSelections.

    Raises:
        ValueError: the response calls no tool and ``error_on_no_tool_call`` is set.
    """
    selections = []
    blocks = [
        b
        for b in response.message.blocks
        if ToolCallBlock is not None and isinstance(b, ToolCallBlock)
    ]
    if blocks:
        for block in blocks:
            arguments = block.tool_kwargs
            selections.append(
                ToolSelection(
                    tool_id=block.tool_call_id or "",
                    tool_name=block.tool_name,
                    tool_kwargs=_parsed(arguments) if isinstance(arguments, str) else arguments,
                )
            )
    else:
        for call in response.message.additional_kwargs.get("tool_calls") or []:
            openai_call = _openai_call_from_legacy(call)
            selections.append(
                ToolSelection(
                    tool_id=openai_call["id"],
                    tool_name=openai_call["function"]["name"],
                    tool_kwargs=_parsed(openai_call["function"]["arguments"]),
                )
            )
    if not selections and error_on_no_tool_call:
        raise ValueError("Expected at least one tool call, but the model called none.")
    return selections


def _parsed(arguments: str) -> dict[str, Any]:
    """Tool arguments as a dict, tolerating the partial JSON of an interrupted stream."""
    try:
        value = parse_partial_json(arguments or "{}")
    except (ValueError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def keep_first_tool_call(response: ChatResponse) -> None:
    """Drop every tool call but the first (LlamaIndex asked for no parallel calls)."""
    message = response.message
    if ToolCallBlock is not None:
        calls = [b for b in message.blocks if isinstance(b, ToolCallBlock)]
        if len(calls) > 1:
            message.blocks = [b for b in message.blocks if not isinstance(b, ToolCallBlock)]
            message.blocks.append(calls[0])
    legacy = message.additional_kwargs.get("tool_calls")
    if isinstance(legacy, list) and len(legacy) > 1:
        message.additional_kwargs["tool_calls"] = legacy[:1]

"""LangChain messages to the Router's OpenAI format, and routed responses back to LangChain.

The Router speaks OpenAI's chat format to every provider (it maps it to Anthropic's blocks
itself), so the conversion is the real OpenAI tool-calling format: assistant ``tool_calls``
with ids, and ``tool`` messages carrying the ``tool_call_id`` they answer.

Every answer carries its routing facts in ``response_metadata``: ``model_name`` (the model
that answered), ``finish_reason``, and ``kalibr_trace_id``, ``kalibr_goal``,
``kalibr_provider``, ``kalibr_path_id``, ``kalibr_decision``, ``kalibr_cost_usd`` and
``kalibr_latency_ms`` (a stream carries the trace id, goal and model on its last chunk).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kalibr_core.router import ChatCompletion, ChatCompletionChunk, Usage
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    InvalidToolCall,
    ToolCall,
    ToolCallChunk,
    UsageMetadata,
    convert_to_openai_messages,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

TRACE_KEY = "kalibr_trace_id"
"""The ``response_metadata`` key holding the trace of the routed call that made a message."""


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as OpenAI chat messages, ready for ``Router.completion``.

    Assistant messages keep their text and their tool calls (LangChain's ``tool_calls``, and
    Anthropic-style ``tool_use`` blocks, become OpenAI ``tool_calls``); other provider blocks
    (thinking, citations) have no OpenAI form and are dropped. Tool messages keep their
    ``tool_call_id``.
    """
    converted = convert_to_openai_messages(list(messages))
    return [_clean(message) for message in converted]


def _clean(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    content = message.get("content")
    if isinstance(content, list):  # provider extras on text parts (cache_control...) go
        message["content"] = [
            {"type": "text", "text": part.get("text", "")}
            if isinstance(part, Mapping) and part.get("type") == "text"
            else part
            for part in content
        ]
    if role == "assistant":
        text = _text(message.get("content"))
        message["content"] = text if text or not message.get("tool_calls") else None
    elif role == "tool":
        message.pop("name", None)  # not part of OpenAI's tool message
        content = message.get("content")
        if isinstance(content, list) and all(_is_text(part) for part in content):
            message["content"] = _text(content)
    return message


def _is_text(part: Any) -> bool:
    return isinstance(part, str) or (isinstance(part, Mapping) and part.get("type") == "text")


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(
        part if isinstance(part, str) else str(part.get("text", ""))
        for part in content
        if _is_text(part)
    )


def usage_metadata(usage: Usage | None) -> UsageMetadata | None:
    """LangChain's usage metadata for a routed call's usage."""
    if usage is None:
        return None
    return UsageMetadata(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
    )


def _tool_calls(response: ChatCompletion) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for call in response.choices[0].message.tool_calls or []:
        raw = call.function.arguments or "{}"
        try:
            args = json.loads(raw)
        except json.JSONDecodeError as exc:
            invalid.append(
                invalid_tool_call(name=call.function.name, args=raw, id=call.id, error=str(exc))
            )
            continue
        if not isinstance(args, dict):
            invalid.append(
                invalid_tool_call(
                    name=call.function.name, args=raw, id=call.id, error="not a JSON object"
                )
            )
            continue
        calls.append(tool_call(name=call.function.name, args=args, id=call.id))
    return calls, invalid


def chat_result(response: ChatCompletion, goal: str) -> ChatResult:
    """A routed completion as LangChain's ``ChatResult`` (one ``AIMessage``)."""
    choice = response.choices[0]
    calls, invalid = _tool_calls(response)
    metadata: dict[str, Any] = {
        "model_name": response.model,
        "finish_reason": choice.finish_reason,
        TRACE_KEY: response.kalibr_trace_id,
        "kalibr_goal": goal,
        "kalibr_provider": response.kalibr_provider,
        "kalibr_path_id": response.kalibr_path_id,
        "kalibr_decision": response.kalibr_decision,
        "kalibr_cost_usd": response.kalibr_cost_usd,
        "kalibr_latency_ms": response.kalibr_latency_ms,
    }
    message = AIMessage(
        content=choice.message.content or "",
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage_metadata=usage_metadata(response.usage),
        response_metadata=metadata,
        id=response.id or None,
    )
    return ChatResult(
        generations=[ChatGeneration(message=message)],
        llm_output={"model_name": response.model, TRACE_KEY: response.kalibr_trace_id},
    )


@dataclass
class StreamConverter:
    """Routed stream chunks to ``AIMessageChunk`` s, and the last chunk with the metadata.

    Usage, finish reason and routing facts are held back for the last chunk
    (``chunk_position="last"``), so an aggregated stream carries each exactly once.
    """

    goal: str
    trace_id: str = ""
    model: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None

    def convert(self, chunk: ChatCompletionChunk) -> ChatGenerationChunk | None:
        """The LangChain chunk for one routed chunk (None if it only carries metadata)."""
        self.trace_id = chunk.kalibr_trace_id or self.trace_id
        self.model = chunk.model or self.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        if not chunk.choices:
            return None
        choice = chunk.choices[0]
        self.finish_reason = choice.finish_reason or self.finish_reason
        delta = choice.delta
        calls = [self._call_chunk(raw) for raw in delta.tool_calls or []]
        if not delta.content and not calls:
            return None
        return ChatGenerationChunk(
            message=AIMessageChunk(content=delta.content or "", tool_call_chunks=calls)
        )

    def _call_chunk(self, raw: Mapping[str, Any]) -> ToolCallChunk:
        index = int(raw.get("index", 0))
        function = raw.get("function") or {}
        return tool_call_chunk(
            name=function.get("name") or None,
            args=function.get("arguments") or None,
            id=raw.get("id") or None,
            index=index,
        )

    def last(self) -> ChatGenerationChunk:
        """The closing chunk: usage, finish reason, model and trace."""
        metadata: dict[str, Any] = {
            "model_name": self.model,
            "finish_reason": self.finish_reason,
            TRACE_KEY: self.trace_id,
            "kalibr_goal": self.goal,
        }
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage_metadata(self.usage),
                response_metadata=metadata,
                chunk_position="last",
            )
        )


def trace_id_of(message: Any) -> str | None:
    """The trace of the routed call that produced ``message`` (an AIMessage), if any."""
    metadata = getattr(message, "response_metadata", None)
    if isinstance(metadata, Mapping):
        value = metadata.get(TRACE_KEY)
        if isinstance(value, str) and value:
            return value
    return None

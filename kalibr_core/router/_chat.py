"""Chat calls through the real provider SDKs, normalised to one OpenAI-shaped result.

* OpenAI and every OpenAI-compatible endpoint (Google, DeepSeek, Ollama, custom base URLs):
  the ``openai`` SDK; a completion's body is read as JSON from its raw response.
* Anthropic: the ``anthropic`` SDK, a message's body read the same way; system messages go to
  ``system=``, OpenAI tool definitions and tool messages are mapped to
  ``tools``/``tool_use``/``tool_result`` and back.
* HuggingFace: ``huggingface_hub.InferenceClient.chat_completion``.

Each adapter returns a :class:`ChatResult` (or yields :class:`StreamPiece` s when streaming);
the Router turns them into ``ChatCompletion`` / ``ChatCompletionChunk`` with its trace.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kalibr_core._errors import ValidationError
from kalibr_core.router._providers import ProviderTarget
from kalibr_core.router._types import (
    FinishReason,
    FunctionCall,
    ToolCall,
    normalise_finish_reason,
)

ANTHROPIC_DEFAULT_MAX_TOKENS = 1024


@dataclass(slots=True)
class ChatResult:
    """A provider's answer, normalised."""

    model: str
    content: str | None
    tool_calls: list[ToolCall] | None
    finish_reason: FinishReason | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    id: str = ""
    created: int = 0


@dataclass(slots=True)
class StreamPiece:
    """One increment of a stream: text, tool-call deltas, the end, or usage."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: FinishReason | None = None
    role: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None
    id: str | None = None


@dataclass(slots=True)
class StreamAccumulator:
    """Rebuilds the full answer from stream pieces (to evaluate the outcome at the end)."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, piece: StreamPiece) -> None:
        """Fold one piece into the answer."""
        if piece.content:
            self.text.append(piece.content)
        for delta in piece.tool_calls or []:
            slot = self.calls.setdefault(
                int(delta.get("index", 0)), {"id": "", "name": "", "arguments": ""}
            )
            slot["id"] = delta.get("id") or slot["id"]
            function = delta.get("function") or {}
            slot["name"] = function.get("name") or slot["name"]
            slot["arguments"] += function.get("arguments") or ""
        if piece.finish_reason:
            self.finish_reason = piece.finish_reason
        if piece.prompt_tokens is not None:
            self.prompt_tokens = piece.prompt_tokens
        if piece.completion_tokens is not None:
            self.completion_tokens = piece.completion_tokens

    @property
    def content(self) -> str:
        """The streamed text so far."""
        return "".join(self.text)

    def tool_calls(self) -> list[ToolCall] | None:
        """The streamed tool calls, complete."""
        if not self.calls:
            return None
        return [
            ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"]))
            for _, c in sorted(self.calls.items())
        ]


# -- OpenAI and OpenAI-compatible ---------------------------------------------------------------
# A completion is read from the SDK's raw response (``with_raw_response``; Anthropic's too):
# the SDK still sends the request, retries, times out and raises its typed errors for every
# failed status, but the Router builds its own OpenAI-shaped response, so the SDK's model of
# the body (validated pydantic objects, about 0.1 ms per call) would be built only to be copied.
def _json_object(body: bytes, what: str) -> dict[str, Any]:
    """A response body that must be a JSON object (JSONDecodeError or ValueError if not)."""
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError(f"the provider answered a JSON {type(data).__name__}, not {what}")
    return data


def _openai_tool_calls(message: Mapping[str, Any]) -> list[ToolCall] | None:
    calls = message.get("tool_calls")
    if not calls or not isinstance(calls, list):
        return None
    result = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        result.append(
            ToolCall(
                id=str(call.get("id") or ""),
                function=FunctionCall(
                    name=str(function.get("name") or ""),
                    arguments=function.get("arguments") or "{}",
                ),
            )
        )
    return result or None


def _openai_result(body: bytes, target: ProviderTarget) -> ChatResult:
    """A completion's JSON body as a :class:`ChatResult`.

    Raises:
        json.JSONDecodeError: the body is not JSON (the Router reports a provider error).
        ValueError: it is JSON but not a completion object.
    """
    data = _json_object(body, "a completion")
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    if not isinstance(choice, dict):
        raise ValueError("the provider's completion has a choice that is not an object")
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}
    usage = data.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    content = message.get("content")
    return ChatResult(
        model=data.get("model") or target.model,
        content=content if isinstance(content, str) or content is None else str(content),
        tool_calls=_openai_tool_calls(message),
        finish_reason=normalise_finish_reason(choice.get("finish_reason")),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        id=str(data.get("id") or ""),
        created=int(data.get("created") or time.time()),
    )


def _openai_piece(chunk: Any) -> StreamPiece:
    piece = StreamPiece(model=getattr(chunk, "model", None), id=getattr(chunk, "id", None))
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        piece.prompt_tokens = int(usage.prompt_tokens or 0)
        piece.completion_tokens = int(usage.completion_tokens or 0)
    if chunk.choices:
        choice = chunk.choices[0]
        delta = choice.delta
        piece.role = getattr(delta, "role", None) == "assistant"
        piece.content = getattr(delta, "content", None)
        calls = getattr(delta, "tool_calls", None)
        if calls:
            piece.tool_calls = [
                c.model_dump(exclude_none=True) if hasattr(c, "model_dump") else dict(c)
                for c in calls
            ]
        piece.finish_reason = normalise_finish_reason(choice.finish_reason)
    return piece


def openai_chat(
    client: Any, target: ProviderTarget, messages: Sequence[Any], params: Mapping[str, Any]
) -> ChatResult:
    """One chat completion through the openai SDK."""
    raw = client.chat.completions.with_raw_response.create(
        model=target.model, messages=messages, **params
    )
    return _openai_result(raw.http_response.content, target)


async def openai_achat(
    client: Any, target: ProviderTarget, messages: Sequence[Any], params: Mapping[str, Any]
) -> ChatResult:
    """Async form of :func:`openai_chat`."""
    raw = await client.chat.completions.with_raw_response.create(
        model=target.model, messages=messages, **params
    )
    return _openai_result(raw.http_response.content, target)


def _stream_params(params: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(params)
    result["stream"] = True
    options = dict(result.get("stream_options") or {})
    options.setdefault("include_usage", True)
    result["stream_options"] = options
    return result


def openai_stream(
    client: Any, target: ProviderTarget, messages: Sequence[Any], params: Mapping[str, Any]
) -> Iterator[StreamPiece]:
    """Stream a chat completion through the openai SDK."""
    stream = client.chat.completions.create(
        model=target.model, messages=messages, **_stream_params(params)
    )
    with stream:
        for chunk in stream:
            yield _openai_piece(chunk)


async def openai_astream(
    client: Any, target: ProviderTarget, messages: Sequence[Any], params: Mapping[str, Any]
) -> AsyncIterator[StreamPiece]:
    """Async form of :func:`openai_stream`."""
    stream = await client.chat.completions.create(
        model=target.model, messages=messages, **_stream_params(params)
    )
    async with stream:
        async for chunk in stream:
            yield _openai_piece(chunk)


# -- Anthropic ------------------------------------------------------------------------------------
def _text_blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif isinstance(part, Mapping) and part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                blocks.append(
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": media, "data": data},
                    }
                )
            else:
                blocks.append({"type": "image", "source": {"type": "url", "url": url}})
        elif isinstance(part, Mapping):
            blocks.append(dict(part))
        else:
            blocks.append({"type": "text", "text": str(part)})
    return blocks


def to_anthropic_messages(messages: Sequence[Any]) -> tuple[str | None, list[dict[str, Any]]]:
    """OpenAI messages to Anthropic's (system text, messages), tool calls mapped both ways."""
    system: list[str] = []
    result: list[dict[str, Any]] = []

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if result and result[-1]["role"] == role:
            result[-1]["content"].extend(blocks)
        else:
            result.append({"role": role, "content": blocks})

    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise ValidationError(
                f"messages[{index}] must be a dict with a 'role'", field="messages"
            )
        role = message["role"]
        if role in {"system", "developer"}:
            system.extend(b["text"] for b in _text_blocks(message.get("content")) if "text" in b)
        elif role == "user":
            append("user", _text_blocks(message.get("content")))
        elif role == "assistant":
            blocks = _text_blocks(message.get("content"))
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                try:
                    arguments = json.loads(function.get("arguments") or "{}")
                except json.JSONDecodeError:
                    arguments = {"_raw": function.get("arguments")}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": arguments,
                    }
                )
            append("assistant", blocks)
        elif role == "tool":
            content = message.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            append(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": message.get("tool_call_id"),
                        "content": text,
                    }
                ],
            )
        else:
            raise ValidationError(f"messages[{index}] has unknown role {role!r}", field="messages")
    return ("\n\n".join(system) or None), result


def to_anthropic_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool definitions to Anthropic's."""
    result = []
    for tool in tools:
        function = tool.get("function", tool)
        result.append(
            {
                "name": function["name"],
                "description": function.get("description", ""),
                "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
            }
        )
    return result


def to_anthropic_tool_choice(choice: Any) -> dict[str, Any] | None:
    """OpenAI tool_choice to Anthropic's."""
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        return {"type": "tool", "name": choice["function"]["name"]}
    raise ValidationError(f"unsupported tool_choice {choice!r}", field="tool_choice")


def to_anthropic_output_config(response_format: Any) -> dict[str, Any] | None:
    """OpenAI ``response_format`` to Anthropic's ``output_config`` (structured outputs).

    A JSON schema maps to ``{"format": {"type": "json_schema", "schema": ...}}``; Anthropic
    has no schema-less JSON mode, so ``json_object`` (and ``text``) map to nothing.
    """
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if not isinstance(schema, Mapping):
        raise ValidationError(
            "response_format json_schema needs a 'schema' object", field="response_format"
        )
    return {"format": {"type": "json_schema", "schema": dict(schema)}}


_ANTHROPIC_PASSTHROUGH = frozenset({"temperature", "top_p", "top_k", "metadata", "timeout"})


def anthropic_params(messages: Sequence[Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Build ``messages.create`` keyword arguments from OpenAI-style ones."""
    system, converted = to_anthropic_messages(messages)
    kwargs: dict[str, Any] = {"messages": converted}
    if system:
        kwargs["system"] = system
    kwargs["max_tokens"] = int(
        params.get("max_tokens")
        or params.get("max_completion_tokens")
        or ANTHROPIC_DEFAULT_MAX_TOKENS
    )
    stop = params.get("stop")
    if stop:
        kwargs["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if params.get("tools"):
        kwargs["tools"] = to_anthropic_tools(params["tools"])
        choice = to_anthropic_tool_choice(params.get("tool_choice"))
        if choice is not None:
            kwargs["tool_choice"] = choice
    output_config = to_anthropic_output_config(params.get("response_format"))
    if output_config is not None:
        kwargs["output_config"] = output_config
    for key in _ANTHROPIC_PASSTHROUGH:
        if key in params and params[key] is not None:
            kwargs[key] = params[key]
    return kwargs


def _anthropic_result(body: bytes, target: ProviderTarget) -> ChatResult:
    """A message's JSON body (read raw, as for OpenAI) as a :class:`ChatResult`."""
    data = _json_object(body, "a message")
    blocks = data.get("content")
    if not isinstance(blocks, list):
        raise ValueError("the provider's message has no content list")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in blocks:
        if not isinstance(block, dict):
            raise ValueError("the provider's message has a content block that is not an object")
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            calls.append(
                ToolCall(
                    id=str(block.get("id") or ""),
                    function=FunctionCall(
                        name=str(block.get("name") or ""),
                        arguments=json.dumps(block.get("input") or {}),
                    ),
                )
            )
    usage = data.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    return ChatResult(
        model=data.get("model") or target.model,
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls or None,
        finish_reason=normalise_finish_reason(data.get("stop_reason")),
        prompt_tokens=int(usage.get("input_tokens") or 0),
        completion_tokens=int(usage.get("output_tokens") or 0),
        id=str(data.get("id") or ""),
        created=int(time.time()),
    )


def anthropic_chat(
    client: Any, target: ProviderTarget, messages: Sequence[Any], params: Mapping[str, Any]
) -> ChatResult:
    """One chat completion through the anthropic SDK."""
    raw = client.messages.with_raw_response.create(
        model=target.model, **anthropic_params(messages, params)
    )
    return _anthropic_result(raw.http_response.content, target)


async def anthropic_achat(
    client: Any, target: ProviderTarget, messages: Sequence[Any], params: Mapping[str, Any]
) -> ChatResult:
    """Async form of :func:`anthropic_chat`."""
    raw = await client.messages.with_raw_response.create(
        model=target.model, **anthropic_params(messages, params)
    )
    return _anthropic_result(raw.http_response.content, target)


class _AnthropicStreamState:
    def __init__(self) -> None:
        self.block_to_call: dict[int, int] = {}

    def piece(self, event: Any) -> StreamPiece | None:
        kind = event.type
        if kind == "message_start":
            message = event.message
            return StreamPiece(
                role=True,
                model=message.model,
                id=message.id,
                prompt_tokens=int(message.usage.input_tokens or 0),
            )
        if kind == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                index = len(self.block_to_call)
                self.block_to_call[event.index] = index
                return StreamPiece(
                    tool_calls=[
                        {
                            "index": index,
                            "id": block.id,
                            "type": "function",
                            "function": {"name": block.name, "arguments": ""},
                        }
                    ]
                )
            return None
        if kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                return StreamPiece(content=delta.text)
            if delta.type == "input_json_delta":
                index = self.block_to_call.get(event.index, 0)
                return StreamPiece(
                    tool_calls=[{"index": index, "function": {"arguments": delta.partial_json}}]
                )
            return None
        if kind == "message_delta":
            usage = getattr(event, "usage", None)
            return StreamPiece(
                finish_reason=normalise_finish_reason(event.delta.stop_reason),
                completion_tokens=int(getattr(usage, "output_tokens", 0) or 0),
            )
        return None


def anthropic_stream(
    client: Any, target: ProviderTarget, messages: Sequence[Any], params: Mapping[str, Any]
) -> Iterator[StreamPiece]:
    """Stream a chat completion through the anthropic SDK."""
    state = _AnthropicStreamState()
    stream = client.messages.create(
        model=target.model, stream=True, **anthropic_params(messages, params)
    )
    with stream:
        for event in stream:
            piece = state.piece(event)
            if piece is not None:
                yield piece


async def anthropic_astream(
    client: Any, target: ProviderTarget, messages: Sequence[Any], params: Mapping[str, Any]
) -> AsyncIterator[StreamPiece]:
    """Async form of :func:`anthropic_stream`."""
    state = _AnthropicStreamState()
    stream = await client.messages.create(
        model=target.model, stream=True, **anthropic_params(messages, params)
    )
    async with stream:
        async for event in stream:
            piece = state.piece(event)
            if piece is not None:
                yield piece


# -- HuggingFace ---------------------------------------------------------------------------
_HF_PARAMS = frozenset(
    {
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "tools",
        "tool_choice",
        "response_format",
        "frequency_penalty",
        "presence_penalty",
        "logprobs",
    }
)


def _hf_kwargs(
    target: ProviderTarget, params: Mapping[str, Any], *, stream: bool = False
) -> dict[str, Any]:
    kwargs = {k: v for k, v in params.items() if k in _HF_PARAMS}
    if "max_completion_tokens" in params and "max_tokens" not in kwargs:
        kwargs["max_tokens"] = params["max_completion_tokens"]
    kwargs["model"] = target.model
    if stream:
        # As for OpenAI: a last chunk with the call's token usage (TGI and the router honour
        # it), so a streamed call records its tokens and cost like a blocking one.
        options = dict(params.get("stream_options") or {})
        options.setdefault("include_usage", True)
        kwargs["stream_options"] = options
    return kwargs


def _hf_result(response: Any, target: ProviderTarget) -> ChatResult:
    choice = response.choices[0]
    message = choice.message
    calls = None
    if getattr(message, "tool_calls", None):
        calls = []
        for call in message.tool_calls:
            arguments = call.function.arguments
            calls.append(
                ToolCall(
                    id=call.id,
                    function=FunctionCall(
                        name=call.function.name,
                        arguments=arguments
                        if isinstance(arguments, str)
                        else json.dumps(arguments),
                    ),
                )
            )
    usage = getattr(response, "usage", None)
    return ChatResult(
        model=getattr(response, "model", None) or target.model,
        content=message.content,
        tool_calls=calls,
        finish_reason=normalise_finish_reason(choice.finish_reason),
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        id=getattr(response, "id", "") or "",
        created=int(getattr(response, "created", 0) or time.time()),
    )


def hf_chat(
    client: Any, target: ProviderTarget, messages: Sequence[Any], params: Mapping[str, Any]
) -> ChatResult:
    """One chat completion through ``InferenceClient.chat_completion``."""
    response = client.chat_completion(list(messages), **_hf_kwargs(target, params))
    return _hf_result(response, target)


async def hf_achat(
    client: Any, target: ProviderTarget, messages: Sequence[Any], params: Mapping[str, Any]
) -> ChatResult:
    """Async form of :func:`hf_chat`."""
    response = await client.chat_completion(list(messages), **_hf_kwargs(target, params))
    return _hf_result(response, target)


def _hf_piece(chunk: Any) -> StreamPiece:
    piece = StreamPiece(model=getattr(chunk, "model", None))
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        piece.prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        piece.completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    if chunk.choices:
        choice = chunk.choices[0]
        piece.content = getattr(choice.delta, "content", None)
        piece.role = getattr(choice.delta, "role", None) == "assistant"
        piece.finish_reason = normalise_finish_reason(getattr(choice, "finish_reason", None))
    return piece


def hf_stream(
    client: Any, target: ProviderTarget, messages: Sequence[Any], params: Mapping[str, Any]
) -> Iterator[StreamPiece]:
    """Stream a chat completion through ``InferenceClient.chat_completion``."""
    kwargs = _hf_kwargs(target, params, stream=True)
    for chunk in client.chat_completion(list(messages), stream=True, **kwargs):
        yield _hf_piece(chunk)


async def hf_astream(
    client: Any, target: ProviderTarget, messages: Sequence[Any], params: Mapping[str, Any]
) -> AsyncIterator[StreamPiece]:
    """Async form of :func:`hf_stream`."""
    kwargs = _hf_kwargs(target, params, stream=True)
    stream = await client.chat_completion(list(messages), stream=True, **kwargs)
    async for chunk in stream:
        yield _hf_piece(chunk)


CHAT = {"openai": openai_chat, "anthropic": anthropic_chat, "huggingface": hf_chat}
ACHAT = {"openai": openai_achat, "anthropic": anthropic_achat, "huggingface": hf_achat}
STREAM = {"openai": openai_stream, "anthropic": anthropic_stream, "huggingface": hf_stream}
ASTREAM = {"openai": openai_astream, "anthropic": anthropic_astream, "huggingface": hf_astream}

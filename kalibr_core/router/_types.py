"""OpenAI-shaped results of routed calls, whatever provider answered.

``ChatCompletion`` mirrors the OpenAI chat completion (``choices[0].message.content``,
``tool_calls``, ``usage``, ``model``) with ``finish_reason`` normalised to OpenAI's values,
plus kalibr's trace handle: pass ``response.kalibr_trace_id`` to ``Router.report`` to report
against exactly this call from any thread or task.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=False)


_M = TypeVar("_M", bound=_Model)
_set = object.__setattr__


def construct(cls: type[_M], values: dict[str, Any]) -> _M:
    """``cls.model_construct(**values)`` for trusted values that name every field of ``cls``.

    What ``model_construct`` leaves on an instance when every field is given and nothing is
    extra, without its per-field loop over aliases and defaults: that loop cost more than the
    rest of building a response. ``values`` becomes the instance's ``__dict__`` (not copied).
    """
    model = cls.__new__(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", set(values))
    _set(model, "__pydantic_extra__", {})
    _set(model, "__pydantic_private__", None)
    return model


class FunctionCall(_Model):
    """The function a tool call invokes, with JSON-encoded arguments."""

    name: str
    arguments: str = "{}"


class ToolCall(_Model):
    """One tool call requested by the model (OpenAI format)."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Model):
    """The assistant message of a choice."""

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(_Model):
    """One completion choice."""

    index: int = 0
    message: Message
    finish_reason: FinishReason | None = "stop"


class Usage(_Model):
    """Token usage of the call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(_Model):
    """A routed chat completion, OpenAI-shaped for every provider.

    Attributes:
        kalibr_trace_id: The trace of this call (for ``Router.report(trace_id=...)``).
        kalibr_path_id: The path that served it.
        kalibr_provider: The provider that answered (openai, anthropic, google, ...).
        kalibr_cost_usd: Estimated cost of the call.
        kalibr_latency_ms: Measured latency of the provider call.
        kalibr_decision: Why the path was chosen (``optimal``, ``exploration``, ``forced``...).
    """

    id: str = ""
    object: Literal["chat.completion"] = "chat.completion"
    created: int = 0
    model: str
    choices: list[Choice]
    usage: Usage = Field(default_factory=Usage)
    kalibr_trace_id: str
    kalibr_path_id: str | None = None
    kalibr_provider: str = "openai"
    kalibr_cost_usd: float = 0.0
    kalibr_latency_ms: float = 0.0
    kalibr_decision: str = "optimal"

    @property
    def content(self) -> str:
        """The first choice's text ("" when the model only called tools)."""
        return self.choices[0].message.content or "" if self.choices else ""


class ChoiceDelta(_Model):
    """The incremental part of a streamed choice."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(_Model):
    """One choice of a stream chunk."""

    index: int = 0
    delta: ChoiceDelta
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(_Model):
    """One chunk of a routed streaming completion (OpenAI ``chat.completion.chunk``)."""

    id: str = ""
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = 0
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    kalibr_trace_id: str


_FINISH_REASONS: Final[dict[str, FinishReason]] = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "eos_token": "stop",
    "eos": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
    "tool_calls": "tool_calls",
    "tool_use": "tool_calls",
    "function_call": "function_call",
    "content_filter": "content_filter",
    "refusal": "content_filter",
    "pause_turn": "stop",
}


def normalise_finish_reason(reason: str | None) -> FinishReason | None:
    """Map provider stop reasons to OpenAI's (Anthropic ``end_turn`` is ``stop``...)."""
    if reason is None:
        return None
    return _FINISH_REASONS.get(reason, "stop")


class SpeechResult(_Model):
    """Result of ``Router.synthesize``: the audio and the call's metadata."""

    audio: bytes
    model: str
    format: str = "mp3"
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    kalibr_trace_id: str


class TranscriptionResult(_Model):
    """Result of ``Router.transcribe``: the text and the call's metadata."""

    text: str
    model: str
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    kalibr_trace_id: str

"""The Router: routed calls through the real provider SDKs, reporting their outcomes."""

from __future__ import annotations

from kalibr_core.router._modalities import HF_TASKS
from kalibr_core.router._outcomes import classify_error
from kalibr_core.router._pricing import speech_cost, token_cost, transcription_cost
from kalibr_core.router._providers import PROVIDERS, ProviderTarget, resolve_provider
from kalibr_core.router._router import (
    AsyncRoutedStream,
    RoutedStream,
    Router,
    router_for_trace,
)
from kalibr_core.router._tools import DEFAULT_TOOLS, ToolRegistry, register_tool
from kalibr_core.router._types import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    FunctionCall,
    Message,
    SpeechResult,
    ToolCall,
    TranscriptionResult,
    Usage,
    normalise_finish_reason,
)

__all__ = [
    "DEFAULT_TOOLS",
    "HF_TASKS",
    "PROVIDERS",
    "AsyncRoutedStream",
    "ChatCompletion",
    "ChatCompletionChunk",
    "Choice",
    "FunctionCall",
    "Message",
    "ProviderTarget",
    "RoutedStream",
    "Router",
    "SpeechResult",
    "ToolCall",
    "ToolRegistry",
    "TranscriptionResult",
    "Usage",
    "classify_error",
    "normalise_finish_reason",
    "register_tool",
    "resolve_provider",
    "router_for_trace",
    "speech_cost",
    "token_cost",
    "transcription_cost",
]

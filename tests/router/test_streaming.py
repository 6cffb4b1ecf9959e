"""Streaming, sync and async: chunks carry the trace; the outcome is judged when the stream ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

import anthropic
import openai
import pytest

from kalibr_core import ProviderError, RateLimitedError
from kalibr_core.simulator import (
    ModelScript,
    ProviderSimulator,
    check_answer,
    company_extraction_examples,
)

pytestmark = pytest.mark.simulator

EXAMPLE = company_extraction_examples()[2]  # "... I work at Datadog."
MODELS = ["gpt-4o", "claude-sonnet-4-6", "meta-llama/Llama-3.1-8B-Instruct"]
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        },
    },
}


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def text_of(chunks: Iterable[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish_reasons(chunks: Iterable[Any]) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


class Judge:
    """success_when that remembers what it was asked to judge, and when."""

    def __init__(self) -> None:
        self.outputs: list[str] = []

    def __call__(self, output: str) -> bool:
        self.outputs.append(output)
        return check_answer(EXAMPLE.prompt, output)


@pytest.mark.parametrize("model", MODELS)
def test_a_stream_is_judged_once_it_has_ended(
    sim_env: ProviderSimulator, make_router: Any, stored: Any, model: str
) -> None:
    judge = Judge()
    router = make_router("stream_sync", [model], success_when=judge)

    stream = router.completion(ask(EXAMPLE.prompt), stream=True)
    chunks = iter(stream)
    first = next(chunks)
    assert judge.outputs == []
    assert stored("stream_sync") == []
    rest = list(chunks)

    every = [first, *rest]
    assert {c.kalibr_trace_id for c in every} == {stream.trace_id}
    text = text_of(every)
    assert json.loads(text) == {"company": "Datadog"}
    assert stream.content == text
    assert finish_reasons(every) == ["stop"]
    assert judge.outputs == [text]
    [outcome] = stored("stream_sync")
    assert (outcome.trace_id, outcome.success, outcome.model_id) == (stream.trace_id, True, model)
    assert outcome.latency_ms is not None
    assert outcome.latency_ms > 0


@pytest.mark.parametrize("model", MODELS)
def test_a_stream_records_its_token_usage_and_cost(
    sim_env: ProviderSimulator, make_router: Any, stored: Any, model: str
) -> None:
    router = make_router("stream_usage", [model], success_when=bool)
    blocking = router.completion(ask(EXAMPLE.prompt))

    chunks = list(router.completion(ask(EXAMPLE.prompt), stream=True))

    _, streamed = stored("stream_usage")
    assert (streamed.input_tokens, streamed.output_tokens) == (
        blocking.usage.prompt_tokens,
        blocking.usage.completion_tokens,
    )
    assert streamed.cost_usd == pytest.approx(blocking.kalibr_cost_usd)
    # One chunk carries the whole call's usage (OpenAI and HuggingFace: a last chunk with
    # include_usage; Anthropic: message_delta, with the prompt's tokens from message_start).
    [usage] = [c.usage for c in chunks if c.usage is not None]
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        blocking.usage.prompt_tokens,
        blocking.usage.completion_tokens,
    )


@pytest.mark.parametrize("model", MODELS)
def test_an_async_stream_is_judged_once_it_has_ended(
    sim_env: ProviderSimulator, make_router: Any, stored: Any, model: str
) -> None:
    judge = Judge()
    router = make_router("stream_async", [model], success_when=judge)

    async def consume() -> tuple[str, list[Any], list[str]]:
        stream = await router.acompletion(ask(EXAMPLE.prompt), stream=True)
        chunks: list[Any] = []
        judged_midway: list[str] = []
        async for chunk in stream:
            if not chunks:
                judged_midway = list(judge.outputs)
            chunks.append(chunk)
        return stream.trace_id, chunks, judged_midway

    trace_id, chunks, judged_midway = asyncio.run(consume())

    assert judged_midway == []
    assert {c.kalibr_trace_id for c in chunks} == {trace_id}
    assert json.loads(text_of(chunks)) == {"company": "Datadog"}
    assert judge.outputs == [text_of(chunks)]
    [outcome] = stored("stream_async")
    assert (outcome.trace_id, outcome.success) == (trace_id, True)


def test_async_streams_work_across_event_loops(
    sim_env: ProviderSimulator, make_router: Any
) -> None:
    """Each asyncio.run() is a new loop; a client cached from the previous one must not leak."""
    router = make_router("stream_loops", ["gpt-4o", "claude-sonnet-4-6"])

    async def once(model: str) -> str:
        stream = await router.acompletion(ask("What is 6 * 7?"), stream=True, force_model=model)
        return text_of([chunk async for chunk in stream])

    for _ in range(2):
        assert asyncio.run(once("gpt-4o")) == "42"
        assert asyncio.run(once("claude-sonnet-4-6")) == "42"


@pytest.mark.parametrize(
    ("model", "sdk_error"),
    [
        ("gpt-4o-stream429", openai.RateLimitError),
        ("claude-haiku-4-5-stream429", anthropic.RateLimitError),
    ],
)
def test_a_stream_the_provider_refuses_raises_and_is_reported(
    sim_env: ProviderSimulator, make_router: Any, stored: Any, model: str, sdk_error: type
) -> None:
    sim_env.set_script(model, ModelScript(rate_limit=1.0))
    judge = Judge()
    router = make_router("stream_refused", [model], success_when=judge)

    stream = router.completion(ask(EXAMPLE.prompt), stream=True)
    with pytest.raises(RateLimitedError) as caught:
        list(stream)

    assert isinstance(caught.value.__cause__, sdk_error)
    assert caught.value.trace_id == stream.trace_id
    assert judge.outputs == []
    [outcome] = stored("stream_refused")
    assert (outcome.trace_id, outcome.success, outcome.failure_category) == (
        stream.trace_id,
        False,
        "rate_limited",
    )


@pytest.mark.parametrize(
    "model", ["gpt-4o-streambreak", "claude-haiku-4-5-streambreak", "org/streambreak"]
)
def test_a_stream_broken_midway_raises_and_is_reported(
    sim_env: ProviderSimulator, make_router: Any, stored: Any, model: str
) -> None:
    sim_env.set_script(model, ModelScript(malformed_json=1.0))  # a truncated event mid-stream
    judge = Judge()
    router = make_router("stream_broken", [model], success_when=judge)
    received: list[Any] = []

    with pytest.raises(ProviderError) as caught:
        for chunk in router.completion(ask(EXAMPLE.prompt), stream=True):
            received.append(chunk)

    assert received  # the failure came after the stream had started
    assert isinstance(caught.value.__cause__, ValueError)  # the SDK's JSON decode error
    assert judge.outputs == []
    [outcome] = stored("stream_broken")
    assert (outcome.success, outcome.failure_category) == (False, "provider_error")


def test_an_async_stream_broken_midway_raises_and_is_reported(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    sim_env.set_script("gpt-4o-astreambreak", ModelScript(malformed_json=1.0))
    router = make_router("astream_broken", ["gpt-4o-astreambreak"], success_when=bool)

    async def consume() -> int:
        received = 0
        stream = await router.acompletion(ask(EXAMPLE.prompt), stream=True)
        async for _ in stream:
            received += 1
        return received

    with pytest.raises(ProviderError):
        asyncio.run(consume())
    [outcome] = stored("astream_broken")
    assert (outcome.success, outcome.failure_category) == (False, "provider_error")


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-6"])
def test_streamed_tool_calls_reassemble_in_openai_shape(
    sim_env: ProviderSimulator, make_router: Any, model: str
) -> None:
    router = make_router("stream_tools", [{"model": model, "tools": [ADD]}])

    chunks = list(router.completion(ask("What is 17 + 25?"), stream=True))

    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            slot = calls.setdefault(delta["index"], {"id": "", "name": "", "arguments": ""})
            function = delta.get("function") or {}
            slot["id"] = delta.get("id") or slot["id"]
            slot["name"] = function.get("name") or slot["name"]
            slot["arguments"] += function.get("arguments") or ""
    [call] = calls.values()
    assert call["id"]
    assert call["name"] == "add"
    assert json.loads(call["arguments"]) == {"a": 17, "b": 25}
    assert finish_reasons(chunks) == ["tool_calls"]
    assert text_of(chunks) == ""


def test_a_stream_left_early_is_not_judged_and_can_be_reported(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    judge = Judge()
    router = make_router("stream_left", ["gpt-4o"], success_when=judge)

    with router.completion(ask(EXAMPLE.prompt), stream=True) as stream:
        next(iter(stream))
    assert judge.outputs == []
    assert stored("stream_left") == []

    router.report(success=False, failure_category="user_unsatisfied")
    [outcome] = stored("stream_left")
    assert (outcome.trace_id, outcome.failure_category) == (stream.trace_id, "user_unsatisfied")

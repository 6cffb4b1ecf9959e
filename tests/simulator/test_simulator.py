"""The provider simulator, exercised through the real openai, anthropic and huggingface_hub SDKs.

Every test talks HTTP over loopback to an in-process simulator; nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import numpy as np
import openai
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

from kalibr_core.simulator import (
    HF_TASKS,
    ModelScript,
    ProviderSimulator,
    Schedule,
    check_answer,
    company_extraction_examples,
    expected_answer,
    task_family,
)
from kalibr_core.simulator._cli import load_config, run

pytestmark = pytest.mark.simulator

ADD_TOOL = {
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
LOOKUP_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_company",
        "parameters": {
            "type": "object",
            "properties": {"company": {"type": "string"}},
            "required": ["company"],
        },
    },
}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city"],
    },
}
ARITHMETIC = [{"role": "user", "content": "What is 17 + 25?"}]
FAILING = {
    "limited": ModelScript(rate_limit=1.0, retry_after_s=2.0),
    "broken": ModelScript(server_error=1.0),
    "slow": ModelScript(timeout=1.0, timeout_s=0.6),
    "garbled": ModelScript(malformed_json=1.0),
    "silent": ModelScript(empty=1.0),
    "busy": ModelScript(overloaded=1.0),
    "small": ModelScript(context_window=5),
}


@pytest.fixture
def sim() -> Iterator[ProviderSimulator]:
    with ProviderSimulator(models=FAILING, seed=7) as simulator:
        yield simulator


@pytest.fixture
def oai(sim: ProviderSimulator) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sim", max_retries=0, timeout=5)
    yield client
    client.close()


@pytest.fixture
def claude(sim: ProviderSimulator) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(
        base_url=sim.anthropic_base_url, api_key="sim", max_retries=0, timeout=5
    )
    yield client
    client.close()


@pytest.fixture
def hf() -> Iterator[InferenceClient]:
    client = InferenceClient(api_key="sim-key", timeout=5)
    yield client
    client.close()


# --------------------------------------------------------------------------------------------
# OpenAI chat


def test_openai_chat_answers_arithmetic_with_usage(
    sim: ProviderSimulator, oai: openai.OpenAI
) -> None:
    response = oai.chat.completions.create(model="gpt-4o", messages=ARITHMETIC)

    assert response.choices[0].message.content == "42"
    assert response.choices[0].finish_reason == "stop"
    assert response.model == "gpt-4o"
    assert response.id.startswith("chatcmpl-")
    assert response.usage is not None
    assert response.usage.completion_tokens == 2
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert sim.request_count("gpt-4o") == 1


def test_openai_chat_accepts_content_parts_and_system_messages(oai: openai.OpenAI) -> None:
    response = oai.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "What is 6 * 7?"}]},
        ],
    )
    assert response.choices[0].message.content == "42"


def test_openai_async_chat_and_stream(sim: ProviderSimulator) -> None:
    async def scenario() -> tuple[str | None, str]:
        async with openai.AsyncOpenAI(
            base_url=sim.openai_base_url, api_key="sim", max_retries=0
        ) as client:
            plain = await client.chat.completions.create(model="gpt-4o", messages=ARITHMETIC)
            stream = await client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "Classify the sentiment: I love it"}],
                stream=True,
            )
            pieces = [chunk.choices[0].delta.content or "" async for chunk in stream]
            return plain.choices[0].message.content, "".join(pieces)

    plain, streamed = asyncio.run(scenario())
    assert plain == "42"
    assert streamed == "positive"


def test_openai_stream_sends_role_pieces_finish_and_usage(oai: openai.OpenAI) -> None:
    prompt = "Describe the migration patterns of arctic terns"
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 3
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert check_answer(prompt, text)
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == math.ceil(len(text.split()) * 1.3)


def test_openai_tool_call_round_trip(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(model="gpt-4o", messages=ARITHMETIC, tools=[ADD_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "add"
    assert json.loads(call.function.arguments) == {"a": 17, "b": 25}

    followup = oai.chat.completions.create(
        model="gpt-4o",
        tools=[ADD_TOOL],
        messages=[
            *ARITHMETIC,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "42"},
        ],
    )
    assert followup.choices[0].finish_reason == "stop"
    assert followup.choices[0].message.content == "42"


def test_openai_tool_choice_none_and_forced(oai: openai.OpenAI) -> None:
    prompt = company_extraction_examples()[0].prompt
    messages = [{"role": "user", "content": prompt}]
    plain = oai.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[ADD_TOOL, LOOKUP_TOOL], tool_choice="none"
    )
    assert plain.choices[0].message.tool_calls is None
    assert check_answer(prompt, plain.choices[0].message.content)

    forced = oai.chat.completions.create(
        model="gpt-4o",
        messages=messages,
        tools=[ADD_TOOL, LOOKUP_TOOL],
        tool_choice={"type": "function", "function": {"name": "lookup_company"}},
    )
    calls = forced.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.name == "lookup_company"
    assert json.loads(calls[0].function.arguments) == {"company": "Stripe"}


def test_a_name_argument_takes_the_name_the_prompt_quotes(oai: openai.OpenAI) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "create_customer",
            "parameters": {
                "type": "object",
                "properties": {"customer_name": {"type": "string"}},
            },
        },
    }
    prompt = (
        "Create a customer named '\u4f60\u597d\u554a\u96c6\u56e2' (Hello Group), a tech company"
    )
    response = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": prompt}],
        tools=[tool],
        tool_choice="required",
    )
    calls = response.choices[0].message.tool_calls
    assert calls is not None
    assert json.loads(calls[0].function.arguments) == {
        "customer_name": "\u4f60\u597d\u554a\u96c6\u56e2"
    }


def test_openai_streamed_tool_call_arguments_reassemble(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o", messages=ARITHMETIC, tools=[ADD_TOOL], stream=True
    )
    chunks = list(stream)
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id is not None
    assert deltas[0].function is not None
    assert deltas[0].function.name == "add"
    arguments = "".join((d.function.arguments or "") for d in deltas if d.function)
    assert len(deltas) > 2
    assert json.loads(arguments) == {"a": 17, "b": 25}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_json_mode_and_json_schema(oai: openai.OpenAI) -> None:
    example = company_extraction_examples()[2]
    messages = [{"role": "user", "content": example.prompt}]
    json_mode = oai.chat.completions.create(
        model="gpt-4o", messages=messages, response_format={"type": "json_object"}
    )
    assert json.loads(json_mode.choices[0].message.content or "") == {"company": "Datadog"}

    schema = {
        "type": "object",
        "properties": {
            "company": {"type": "string"},
            "confidence": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["company", "confidence", "tags"],
        "additionalProperties": False,
    }
    structured = oai.chat.completions.create(
        model="gpt-4o",
        messages=messages,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "extraction", "schema": schema, "strict": True},
        },
    )
    value = json.loads(structured.choices[0].message.content or "")
    assert value["company"] == "Datadog"
    assert isinstance(value["confidence"], int | float)
    assert isinstance(value["tags"], list)
    assert all(isinstance(tag, str) for tag in value["tags"])


def test_openai_max_tokens_truncates_with_length(oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Explain photosynthesis in green plants"}]
    full = oai.chat.completions.create(model="gpt-4o", messages=messages)
    cut = oai.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=3)

    assert full.choices[0].finish_reason == "stop"
    assert cut.choices[0].finish_reason == "length"
    full_text = full.choices[0].message.content or ""
    cut_text = cut.choices[0].message.content or ""
    assert full_text.startswith(cut_text)
    assert 0 < len(cut_text) < len(full_text)
    assert cut.usage is not None
    assert cut.usage.completion_tokens <= 3


def test_openai_stop_sequence_cuts_the_answer(oai: openai.OpenAI) -> None:
    response = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Explain photosynthesis in green plants"}],
        stop=["answer"],
    )
    assert response.choices[0].message.content == "Here is a short "
    assert response.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("model", "error", "status"),
    [
        ("limited", openai.RateLimitError, 429),
        ("broken", openai.InternalServerError, 500),
        ("busy", openai.InternalServerError, 503),
        ("small", openai.BadRequestError, 400),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_openai_injected_http_errors(
    sim: ProviderSimulator,
    oai: openai.OpenAI,
    model: str,
    error: type[openai.APIStatusError],
    status: int,
    stream: bool,
) -> None:
    with pytest.raises(error) as raised:
        oai.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "What is 1 + 1, please tell me now?"}],
            stream=stream,
        )
    assert raised.value.status_code == status
    body = raised.value.body
    assert isinstance(body, dict)
    assert set(body) >= {"message", "type", "code"}
    if model == "limited":
        assert raised.value.response.headers["retry-after"] == "2"
        assert body["code"] == "rate_limit_exceeded"
    if model == "small":
        assert body["code"] == "context_length_exceeded"
    stats = sim.stats()[model]
    assert stats.requests == 1
    assert stats.answered == 0
    assert sum(stats.errors.values()) == 1


def test_openai_timeout_raises_api_timeout_error(sim: ProviderSimulator) -> None:
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sim", max_retries=0, timeout=0.15)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="slow", messages=ARITHMETIC)
    assert time.monotonic() - started < 0.55
    assert sim.stats()["slow"].errors == {"timeout": 1}
    client.close()


def test_openai_malformed_json_fails_to_parse(oai: openai.OpenAI) -> None:
    with pytest.raises((json.JSONDecodeError, openai.APIError)):
        oai.chat.completions.create(model="garbled", messages=ARITHMETIC)
    with pytest.raises((json.JSONDecodeError, openai.APIError)):
        list(oai.chat.completions.create(model="garbled", messages=ARITHMETIC, stream=True))


def test_openai_empty_content(sim: ProviderSimulator, oai: openai.OpenAI) -> None:
    response = oai.chat.completions.create(model="silent", messages=ARITHMETIC)
    assert response.choices[0].message.content == ""
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.completion_tokens == 0
    assert sim.stats()["silent"].errors == {"empty": 1}


def test_raw_http_errors_use_openai_shape(sim: ProviderSimulator) -> None:
    url = sim.openai_base_url
    auth = {"authorization": "Bearer sim"}
    unauthenticated = httpx.post(f"{url}/chat/completions", json={"model": "m", "messages": []})
    missing_messages = httpx.post(f"{url}/chat/completions", json={"model": "m"}, headers=auth)
    missing_model = httpx.post(
        f"{url}/chat/completions", json={"messages": ARITHMETIC}, headers=auth
    )
    unknown_route = httpx.post(f"{url}/nothing-here", json={}, headers=auth)
    bad_json = httpx.post(f"{url}/chat/completions", content=b"{nope", headers=auth)

    assert unauthenticated.status_code == 401
    assert missing_messages.status_code == 400
    assert missing_messages.json()["error"]["param"] == "messages"
    assert missing_model.status_code == 400
    assert "model" in missing_model.json()["error"]["message"]
    assert unknown_route.status_code == 404
    assert unknown_route.json()["error"]["type"] == "invalid_request_error"
    assert bad_json.status_code == 400
    assert httpx.get(f"{sim.base_url}/health").status_code == 200
    assert sim.stats() == {}


def test_models_list_in_each_provider_shape(
    oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    assert sorted(m.id for m in oai.models.list()) == sorted(FAILING)
    anthropic_models = claude.models.list()
    assert sorted(m.id for m in anthropic_models.data) == sorted(FAILING)
    assert all(m.type == "model" for m in anthropic_models.data)


def test_openai_embeddings_default_base64_and_dimensions(oai: openai.OpenAI) -> None:
    default = oai.embeddings.create(model="text-embedding-3-small", input=["red apple", "x"])
    sized = oai.embeddings.create(
        model="text-embedding-3-small", input="red apple", dimensions=8, encoding_format="float"
    )
    first = np.array(default.data[0].embedding)
    assert first.shape == (256,)
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-3)
    assert len(sized.data[0].embedding) == 8
    assert default.usage.prompt_tokens > 0


# --------------------------------------------------------------------------------------------
# OpenAI audio


@pytest.mark.parametrize("audio_format", ["wav", "mp3"])
def test_openai_speech_transcription_round_trip(oai: openai.OpenAI, audio_format: str) -> None:
    text = "Please schedule the meeting for Tuesday at noon"
    speech = oai.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input=text,
        response_format=audio_format,  # type: ignore[arg-type]
    )
    audio = speech.read()
    if audio_format == "wav":
        assert audio[:4] == b"RIFF"
        assert audio[8:12] == b"WAVE"
    else:
        assert audio[:3] == b"ID3"

    as_json = oai.audio.transcriptions.create(model="whisper-1", file=(f"a.{audio_format}", audio))
    as_text = oai.audio.transcriptions.create(
        model="whisper-1", file=(f"a.{audio_format}", audio), response_format="text"
    )
    verbose = oai.audio.transcriptions.create(
        model="whisper-1", file=(f"a.{audio_format}", audio), response_format="verbose_json"
    )
    assert as_json.text == text
    assert as_text == text
    assert verbose.text == text
    assert verbose.duration is not None


def test_wrong_speech_model_garbles_the_transcript(sim: ProviderSimulator) -> None:
    sim.set_script("bad-tts", ModelScript(accuracy=0.0))
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sim", max_retries=0)
    text = "the quick brown fox"
    audio = client.audio.speech.create(
        model="bad-tts", voice="alloy", input=text, response_format="wav"
    ).read()
    transcript = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio))
    assert transcript.text != text
    assert len(transcript.text.split()) == len(text.split())
    client.close()


# --------------------------------------------------------------------------------------------
# Anthropic


def test_anthropic_message_with_usage_and_stop_reasons(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="claude-sonnet-4",
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "What is 2 * 21?"}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "42"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens == 2

    long_prompt = [{"role": "user", "content": "Explain photosynthesis in green plants"}]
    cut = claude.messages.create(model="claude-sonnet-4", max_tokens=2, messages=long_prompt)
    assert cut.stop_reason == "max_tokens"
    stopped = claude.messages.create(
        model="claude-sonnet-4", max_tokens=64, messages=long_prompt, stop_sequences=["short"]
    )
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.stop_sequence == "short"
    assert stopped.content[0].type == "text"
    assert stopped.content[0].text == "Here is a "


def test_anthropic_stream_event_sequence(claude: anthropic.Anthropic) -> None:
    prompt = "Explain photosynthesis in green plants"
    with claude.messages.stream(
        model="claude-sonnet-4", max_tokens=64, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert kinds[1] == "content_block_start"
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert kinds.count("content_block_delta") > 3
    assert final.stop_reason == "end_turn"
    assert final.content[0].type == "text"
    assert check_answer(prompt, final.content[0].text)
    assert final.usage.output_tokens == math.ceil(len(final.content[0].text.split()) * 1.3)


def test_anthropic_tool_use_round_trip(claude: anthropic.Anthropic) -> None:
    question = [{"role": "user", "content": "What's the weather in Paris right now?"}]
    first = claude.messages.create(
        model="claude-sonnet-4", max_tokens=128, tools=[WEATHER_TOOL], messages=question
    )
    assert first.stop_reason == "tool_use"
    block = first.content[0]
    assert block.type == "tool_use"
    assert block.name == "get_weather"
    assert block.input == {"city": "Paris", "unit": "celsius"}

    second = claude.messages.create(
        model="claude-sonnet-4",
        max_tokens=128,
        tools=[WEATHER_TOOL],
        messages=[
            *question,
            {"role": "assistant", "content": [block.model_dump()]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": block.id, "content": "18C and sunny"}
                ],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    assert second.content[0].text == "18C and sunny"

    none = claude.messages.create(
        model="claude-sonnet-4",
        max_tokens=128,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "none"},
        messages=question,
    )
    assert none.content[0].type == "text"


def test_anthropic_streamed_tool_use(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude-sonnet-4",
        max_tokens=128,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Berlin?"}],
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    json_deltas = [
        e for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(json_deltas) > 1
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use"
    assert final.content[0].input == {"city": "Berlin", "unit": "celsius"}


@pytest.mark.parametrize(
    ("model", "error", "status"),
    [
        ("limited", anthropic.RateLimitError, 429),
        ("busy", anthropic.OverloadedError, 529),
        ("broken", anthropic.InternalServerError, 500),
        ("small", anthropic.BadRequestError, 400),
    ],
)
def test_anthropic_errors(
    claude: anthropic.Anthropic, model: str, error: type[anthropic.APIStatusError], status: int
) -> None:
    with pytest.raises(error) as raised:
        claude.messages.create(
            model=model, max_tokens=16, messages=[{"role": "user", "content": "Hello there, how?"}]
        )
    assert raised.value.status_code == status
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    if model == "limited":
        assert body["error"]["type"] == "rate_limit_error"
        assert raised.value.response.headers["retry-after"] == "2"


def test_anthropic_timeout_malformed_and_empty(sim: ProviderSimulator) -> None:
    client = anthropic.Anthropic(
        base_url=sim.anthropic_base_url, api_key="sim", max_retries=0, timeout=0.15
    )
    hello = [{"role": "user", "content": "Hello"}]
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.create(model="slow", max_tokens=16, messages=hello)
    with pytest.raises((json.JSONDecodeError, anthropic.APIError)):
        client.messages.create(model="garbled", max_tokens=16, messages=hello)
    empty = client.messages.create(model="silent", max_tokens=16, messages=hello)
    assert empty.content == []
    assert empty.usage.output_tokens == 0
    client.close()


def test_anthropic_raw_auth_and_validation(sim: ProviderSimulator) -> None:
    url = f"{sim.anthropic_base_url}/v1/messages"
    body = {"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    no_key = httpx.post(url, json=body)
    with_x_api_key = httpx.post(url, json=body, headers={"x-api-key": "sim"})
    no_max_tokens = httpx.post(
        url, json={k: v for k, v in body.items() if k != "max_tokens"}, headers={"x-api-key": "k"}
    )
    assert no_key.status_code == 401
    assert no_key.json()["error"]["type"] == "authentication_error"
    assert with_x_api_key.status_code == 200
    assert with_x_api_key.json()["type"] == "message"
    assert no_max_tokens.status_code == 400
    assert no_max_tokens.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


# --------------------------------------------------------------------------------------------
# Hugging Face InferenceClient


def test_hf_chat_completion_by_base_url_and_by_model_url(
    sim: ProviderSimulator, hf: InferenceClient
) -> None:
    by_base = InferenceClient(base_url=sim.hf_base_url, api_key="sim-key")
    answer = by_base.chat_completion(
        [{"role": "user", "content": "What is 3 + 4?"}], model="meta-llama/Llama-3.1-8B-Instruct"
    )
    assert answer.choices[0].message.content == "7"

    by_url = InferenceClient(model=sim.hf_model_url("Qwen/Qwen2.5-7B"), api_key="sim-key")
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in by_url.chat_completion(
            [{"role": "user", "content": "What is 10 - 4?"}], stream=True
        )
    ]
    assert "".join(pieces) == "6"
    assert sim.request_count("meta-llama/Llama-3.1-8B-Instruct") == 1
    assert sim.request_count("Qwen/Qwen2.5-7B") == 1
    by_base.close()
    by_url.close()


def _url(sim: ProviderSimulator, task: str) -> str:
    return sim.hf_model_url(f"org/{task}-model", task)


def test_hf_text_tasks(sim: ProviderSimulator, hf: InferenceClient) -> None:
    review = "I love this phone, the battery is excellent"
    labels = hf.text_classification(review, model=_url(sim, "text-classification"))
    assert labels[0].label == "positive"
    assert labels[0].score > labels[1].score

    text = "Hi, I'm Sarah from Stripe. We are hiring in Berlin."
    entities = hf.token_classification(text, model=_url(sim, "token-classification"))
    found = {(e.entity_group, e.word) for e in entities}
    assert found == {("PER", "Sarah"), ("ORG", "Stripe"), ("LOC", "Berlin")}
    assert all(text[e.start : e.end] == e.word for e in entities)

    summary = hf.summarization(
        "The launch went well. Sales doubled.", model=_url(sim, "summarization")
    )
    assert summary.summary_text == "The launch went well."

    translated = hf.translation(
        "Hello world", model=_url(sim, "translation"), src_lang="en", tgt_lang="fr"
    )
    assert translated.translation_text == "Bonjour monde"

    masks = hf.fill_mask("The capital of France is [MASK].", model=_url(sim, "fill-mask"))
    assert masks[0].token_str == "paris"
    assert masks[0].sequence == "The capital of France is paris."

    table = {"Repository": ["Transformers", "Datasets"], "Stars": ["36542", "4512"]}
    answer = hf.table_question_answering(
        table, "How many stars does Datasets have?", model=_url(sim, "table-question-answering")
    )
    assert answer.answer == "4512"
    assert answer.coordinates == [[1, 1]]

    generated = hf.text_generation("What is 9 + 10?", model=_url(sim, "text-generation"))
    assert generated == "19"
    detailed = hf.text_generation(
        "Explain photosynthesis in green plants",
        model=_url(sim, "text-generation"),
        details=True,
        max_new_tokens=2,
    )
    assert detailed.details is not None
    assert detailed.details.finish_reason == "length"
    streamed = "".join(
        hf.text_generation("What is 9 + 10?", model=_url(sim, "text-generation"), stream=True)
    )
    assert streamed == "19"


def test_hf_feature_extraction_is_semantic_and_deterministic(
    sim: ProviderSimulator, hf: InferenceClient
) -> None:
    url = _url(sim, "feature-extraction")
    first = hf.feature_extraction("the cat sat on the mat", model=url)
    again = hf.feature_extraction("the cat sat on the mat", model=url)
    related = hf.feature_extraction("a cat on a mat", model=url)
    unrelated = hf.feature_extraction("quarterly revenue projections", model=url)
    assert first.shape == (1, 256)
    assert np.allclose(first, again)
    assert float(first[0] @ related[0]) > float(first[0] @ unrelated[0]) + 0.2


def test_hf_audio_tasks(sim: ProviderSimulator, hf: InferenceClient) -> None:
    text = "turn on the kitchen lights"
    audio = hf.text_to_speech(text, model=_url(sim, "text-to-speech"))
    assert audio[:4] == b"RIFF"
    transcript = hf.automatic_speech_recognition(
        audio, model=_url(sim, "automatic-speech-recognition")
    )
    assert transcript.text == text
    classes = hf.audio_classification(audio, model=_url(sim, "audio-classification"))
    assert classes[0].label == "speech"


def test_hf_image_tasks_round_trip(sim: ProviderSimulator, hf: InferenceClient) -> None:
    pytest.importorskip("PIL", reason="InferenceClient decodes images with Pillow")
    image = hf.text_to_image(
        "a tabby cat on a red sofa", model=_url(sim, "text-to-image"), width=32, height=24
    )
    assert image.size == (32, 24)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()

    caption = hf.image_to_text(png, model=_url(sim, "image-to-text"))
    assert caption.generated_text == "an image of a tabby cat on a red sofa"
    labels = hf.image_classification(png, model=_url(sim, "image-classification"))
    assert labels[0].label == "tabby"
    boxes = hf.object_detection(png, model=_url(sim, "object-detection"), threshold=0.9)
    assert [b.label for b in boxes] == ["tabby"]
    assert 0 <= boxes[0].box.xmin < boxes[0].box.xmax <= 32
    assert 0 <= boxes[0].box.ymin < boxes[0].box.ymax <= 24
    segments = hf.image_segmentation(png, model=_url(sim, "image-segmentation"))
    assert [s.label for s in segments] == ["tabby", "background"]
    assert segments[0].mask.size == (32, 24)


def test_hf_task_guessed_from_payload_without_pipeline(
    sim: ProviderSimulator, hf: InferenceClient
) -> None:
    url = sim.hf_model_url("bert-base")
    vectors = hf.feature_extraction("hello world", model=url)
    filled = hf.fill_mask("Paris is the capital of <mask>.", model=url)
    entities = hf.token_classification("I'm Omar with Twilio", model=url, stride=0)
    assert vectors.shape == (1, 256)
    assert len(filled) == 5
    assert {e.word for e in entities} == {"Omar", "Twilio"}
    assert set(sim.stats()["bert-base"].routes) == {
        "hf.feature-extraction",
        "hf.fill-mask",
        "hf.token-classification",
    }


def test_hf_errors(sim: ProviderSimulator) -> None:
    client = InferenceClient(api_key="sim-key", timeout=0.15)
    with pytest.raises(HfHubHTTPError) as limited:
        client.summarization("Some text here.", model=sim.hf_model_url("limited", "summarization"))
    assert limited.value.response.status_code == 429
    with pytest.raises(HfHubHTTPError) as broken:
        client.text_classification("fine", model=sim.hf_model_url("broken", "text-classification"))
    assert broken.value.response.status_code == 500
    with pytest.raises(InferenceTimeoutError):
        client.summarization("Some text here.", model=sim.hf_model_url("slow", "summarization"))
    with pytest.raises(json.JSONDecodeError):
        client.summarization("Some text here.", model=sim.hf_model_url("garbled", "summarization"))
    empty = client.summarization("Some text.", model=sim.hf_model_url("silent", "summarization"))
    assert empty.summary_text == ""
    client.close()


def test_hf_model_url_rejects_unknown_tasks(sim: ProviderSimulator) -> None:
    assert len(HF_TASKS) == 16
    with pytest.raises(ValueError, match="unknown Hugging Face task"):
        sim.hf_model_url("m", "text-to-video")
    assert sim.hf_model_url("org/m", "text_classification").endswith(
        "/hf-inference/models/org/m/pipeline/text-classification"
    )


# --------------------------------------------------------------------------------------------
# Scripts, schedules, determinism


def test_schedule_shapes() -> None:
    step = Schedule.step(at=50, before=0.9, after=0.2)
    linear = Schedule.linear(start=1.0, end=0.0, from_=10, to=20)
    piecewise = Schedule.piecewise([(0, 0.9), (50, 0.3), (100, 0.8)])
    assert [step(49), step(50), step(500)] == [0.9, 0.2, 0.2]
    assert [linear(0), linear(10), linear(15), linear(20), linear(99)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert [piecewise(10), piecewise(60), piecewise(100)] == [0.9, 0.3, 0.8]
    assert Schedule.constant(0.4)(10**6) == 0.4
    for schedule in (step, linear, piecewise, Schedule.constant(0.4)):
        assert Schedule.from_json(json.loads(json.dumps(schedule.to_json()))) == schedule


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Schedule.constant(1.5), "between 0 and 1"),
        (lambda: Schedule.step(at=0, before=0.5, after=0.1), "at=0"),
        (lambda: Schedule.linear(start=1, end=0, from_=5, to=5), "to > from_"),
        (lambda: Schedule.piecewise([(10, 0.5), (5, 0.2)]), "strictly increasing"),
        (lambda: ModelScript(rate_limit=0.6, server_error=0.5), "add up to 1.100"),
        (lambda: ModelScript(latency_ms=-1), "latency_ms"),
        (lambda: ModelScript(context_window=0), "context_window"),
        (lambda: ModelScript.from_json({"acuracy": 0.5}), "unknown model script key"),
    ],
)
def test_scripts_validate_with_clear_errors(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_error_sum_is_checked_where_schedules_overlap() -> None:
    ModelScript(rate_limit=Schedule.step(at=10, before=0.8, after=0.0), server_error=0.2)
    with pytest.raises(ValueError, match="at request 10"):
        ModelScript(rate_limit=Schedule.step(at=10, before=0.0, after=0.9), server_error=0.2)


def _arithmetic_run(sim: ProviderSimulator, model: str, count: int) -> list[bool]:
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sim", max_retries=0)
    outcomes = []
    for i in range(count):
        prompt = f"What is {i} + 7?"
        response = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}]
        )
        outcomes.append(check_answer(prompt, response.choices[0].message.content))
    client.close()
    return outcomes


def test_step_degradation_is_observable_over_http() -> None:
    script = ModelScript(accuracy=Schedule.step(at=60, before=0.95, after=0.2))
    with ProviderSimulator(models={"gpt-4o": script}, seed=3) as sim:
        outcomes = _arithmetic_run(sim, "gpt-4o", 120)
        stats = sim.stats()["gpt-4o"]
    before, after = outcomes[:60], outcomes[60:]
    assert sum(before) / 60 > 0.8
    assert sum(after) / 60 < 0.4
    assert stats.requests == 120
    assert stats.correct == sum(outcomes)


def test_same_seed_same_behaviour_other_seed_differs() -> None:
    script = {"coin": ModelScript(accuracy=0.5, rate_limit=0.1)}

    def observe(seed: int) -> list[tuple[str, bool]]:
        with ProviderSimulator(models=script, seed=seed) as sim:
            client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sim", max_retries=0)
            for i in range(40):
                with contextlib.suppress(openai.RateLimitError):
                    client.chat.completions.create(
                        model="coin", messages=[{"role": "user", "content": f"What is {i} + 1?"}]
                    )
            client.close()
            return [(r.outcome, r.correct) for r in sim.records("coin")]

    first, second, other = observe(11), observe(11), observe(12)
    assert first == second
    assert first != other
    assert {outcome for outcome, _ in first} == {"ok", "rate_limit"}


def test_set_script_changes_behaviour_at_runtime(
    sim: ProviderSimulator, oai: openai.OpenAI
) -> None:
    assert oai.chat.completions.create(model="gpt-4o", messages=ARITHMETIC).choices
    sim.set_script("gpt-4o", ModelScript(rate_limit=1.0))
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="gpt-4o", messages=ARITHMETIC)
    sim.set_script("gpt-4o", ModelScript(accuracy=0.0))
    wrong = oai.chat.completions.create(model="gpt-4o", messages=ARITHMETIC)
    assert not check_answer(ARITHMETIC[0]["content"], wrong.choices[0].message.content)
    assert sim.request_count("gpt-4o") == 3
    assert [r.n for r in sim.records("gpt-4o")] == [0, 1, 2]


def test_latency_is_applied() -> None:
    with ProviderSimulator(models={"slowish": ModelScript(latency_ms=80)}) as sim:
        response = httpx.post(
            f"{sim.openai_base_url}/chat/completions",
            json={"model": "slowish", "messages": ARITHMETIC},
            headers={"authorization": "Bearer sim"},
        )
        started = time.monotonic()
        httpx.post(
            f"{sim.openai_base_url}/chat/completions",
            json={"model": "slowish", "messages": ARITHMETIC},
            headers={"authorization": "Bearer sim"},
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed >= 0.075


def test_concurrent_requests_each_get_a_request_number(sim: ProviderSimulator) -> None:
    def worker() -> None:
        with httpx.Client() as client:
            for _ in range(5):
                client.post(
                    f"{sim.openai_base_url}/chat/completions",
                    json={"model": "shared", "messages": ARITHMETIC},
                    headers={"authorization": "Bearer sim"},
                )

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sim.request_count("shared") == 30
    assert sorted(r.n for r in sim.records("shared")) == list(range(30))


def test_unknown_models_default_and_ctx_suffix(oai: openai.OpenAI) -> None:
    assert oai.chat.completions.create(model="anything-new", messages=ARITHMETIC).choices
    with pytest.raises(openai.BadRequestError, match="maximum context length is 4 tokens"):
        oai.chat.completions.create(
            model="tiny-ctx4", messages=[{"role": "user", "content": "one two three four five"}]
        )


def test_simulator_refuses_non_loopback_hosts() -> None:
    with pytest.raises(ValueError, match="loopback"):
        ProviderSimulator(host="0.0.0.0")
    with pytest.raises(ValueError, match="loopback"):
        ProviderSimulator(host="10.1.2.3")


# --------------------------------------------------------------------------------------------
# Task families


def test_company_extraction_examples_are_answered_correctly(oai: openai.OpenAI) -> None:
    examples = company_extraction_examples()
    assert len(examples) >= 10
    for example in examples:
        response = oai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": example.prompt}]
        )
        content = response.choices[0].message.content
        assert json.loads(content or "") == {"company": example.company}
        assert expected_answer(example.prompt) == example.expected
        assert check_answer(example.prompt, content)


def test_wrong_company_answers_fail_the_check(sim: ProviderSimulator) -> None:
    sim.set_script("liar", ModelScript(accuracy=0.0))
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sim", max_retries=0)
    for example in company_extraction_examples():
        content = (
            client.chat.completions.create(
                model="liar", messages=[{"role": "user", "content": example.prompt}]
            )
            .choices[0]
            .message.content
        )
        assert content
        assert not check_answer(example.prompt, content)
    client.close()


def test_expected_answer_and_check_answer() -> None:
    assert task_family("What is 17 + 25?") == "arithmetic"
    assert expected_answer("What is 17 + 25?") == "42"
    assert expected_answer("What is 7 divided by 2?") == "3.5"
    assert expected_answer("Classify the sentiment: the update is terrible") == "negative"
    assert expected_answer("Classify the sentiment: it is not good") == "negative"
    assert expected_answer("Classify the sentiment: it arrived on Monday") == "neutral"
    assert expected_answer("Write a haiku about autumn") is None
    assert check_answer("What is 17 + 25?", '{"answer": 42}')
    assert not check_answer("What is 17 + 25?", "43")
    assert not check_answer("Classify the sentiment: I love it", "positive or negative")
    prompt = company_extraction_examples()[0].prompt
    assert check_answer(prompt, '{"company": "stripe"}')
    assert not check_answer(prompt, "The company is Stripe.")
    assert not check_answer(prompt, '{"company": "Sarah"}')
    assert check_answer("Write a haiku about autumn", "Leaves fall in autumn")
    assert not check_answer("Write a haiku about autumn", "")


RAG_PROMPT = (
    "Context information is below.\n---------------------\n"
    "The Falcon rocket is built by Orbital Works in Denver.\n\n"
    "Mira Patel founded Quiet Harbor, a company that makes noise-cancelling windows.\n"
    "---------------------\n"
    "Given the context information and not prior knowledge, answer the query.\n"
    "Query: Who founded Quiet Harbor?\nAnswer: "
)
QUIET_HARBOR = "Mira Patel founded Quiet Harbor, a company that makes noise-cancelling windows."


def test_context_qa_quotes_the_best_matching_context_sentence(sim: ProviderSimulator) -> None:
    sim.set_script("rag-liar", ModelScript(accuracy=0.0))
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sim", max_retries=0)
    answers = {
        model: client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": RAG_PROMPT}]
        )
        .choices[0]
        .message.content
        for model in ("gpt-4o", "rag-liar")
    }
    client.close()

    assert task_family(RAG_PROMPT) == "context_qa"
    assert expected_answer(RAG_PROMPT) == answers["gpt-4o"] == QUIET_HARBOR
    assert check_answer(RAG_PROMPT, answers["gpt-4o"])
    assert not check_answer(RAG_PROMPT, answers["rag-liar"])
    assert check_answer(RAG_PROMPT, json.dumps({"answer": QUIET_HARBOR.upper()}))
    # The question may come before the context (LangChain's RAG prompt); labels are dropped.
    question_first = (
        "Use the following pieces of retrieved context to answer the question.\n"
        "Question: Where is the Falcon rocket built?\n"
        "Context: The Falcon rocket is built by Orbital Works in Denver. Cats sleep a lot.\n"
        "Answer:"
    )
    assert (
        expected_answer(question_first) == "The Falcon rocket is built by Orbital Works in Denver."
    )
    unrelated = RAG_PROMPT.replace("Who founded Quiet Harbor?", "How tall is Everest?")
    assert expected_answer(unrelated) == "The context does not say."
    # Without a context, a question line is just a question.
    assert task_family("Question: what is 17 + 25?") == "arithmetic"


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_serves_configured_models_until_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "models.json"
    config.write_text(
        json.dumps(
            {
                "models": {
                    "gpt-4o": {"accuracy": {"step": {"at": 5, "before": 0.9, "after": 0.1}}},
                    "claude": {"rate_limit": 1.0},
                }
            }
        )
    )
    scripts, default = load_config(config)
    assert scripts["gpt-4o"].schedule("accuracy")(6) == 0.1
    assert default is None

    stop = threading.Event()
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(run(["--port", "0", "--config", str(config)], stop=stop))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 5
        output = ""
        while "OpenAI" not in output and time.monotonic() < deadline:
            time.sleep(0.02)
            output += capsys.readouterr().out
        base = next(line for line in output.splitlines() if "OpenAI" in line).split("=")[1]
        models = httpx.get(f"{base.strip()}/models", headers={"authorization": "Bearer k"})
        limited = httpx.post(
            f"{base.strip()}/chat/completions",
            json={"model": "claude", "messages": ARITHMETIC},
            headers={"authorization": "Bearer k"},
        )
    finally:
        stop.set()
        thread.join(timeout=5)
    assert sorted(m["id"] for m in models.json()["data"]) == ["claude", "gpt-4o"]
    assert limited.status_code == 429
    assert codes == [0]


def test_cli_refuses_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().out


def test_cli_rejects_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"gpt-4o": {"accuracy": 2}}))
    assert run(["--port", "0", "--config", str(config)]) == 2
    assert "between 0 and 1" in capsys.readouterr().out


def test_base64_helper_matches_openai_decoding() -> None:
    from kalibr_core.simulator._tasks import embedding_base64

    vector = [0.5, -0.25, 1.0]
    decoded = np.frombuffer(base64.b64decode(embedding_base64(vector)), dtype="<f4")
    assert decoded.tolist() == vector

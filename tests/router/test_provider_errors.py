"""Provider failures: raised as kalibr errors chained to the SDK's, and recorded as outcomes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import openai
import pytest
from huggingface_hub.errors import HfHubHTTPError

from kalibr_core import (
    AuthenticationError,
    ContextExceededError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
)
from kalibr_core.simulator import ModelScript, ProviderSimulator

pytestmark = pytest.mark.simulator

SUM = "What is 17 + 25?"
LONG = " ".join(["Please read this long message about harbour lighthouses carefully."] * 10)


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


INJECTED = [
    ("gpt-4o-err429", "rate_limit", RateLimitedError, "rate_limited", openai.RateLimitError),
    (
        "claude-haiku-4-5-err429",
        "rate_limit",
        RateLimitedError,
        "rate_limited",
        anthropic.RateLimitError,
    ),
    ("org/err429", "rate_limit", RateLimitedError, "rate_limited", HfHubHTTPError),
    ("gpt-4o-err500", "server_error", ProviderError, "provider_error", openai.InternalServerError),
    (
        "claude-haiku-4-5-err500",
        "server_error",
        ProviderError,
        "provider_error",
        anthropic.InternalServerError,
    ),
    ("org/err500", "server_error", ProviderError, "provider_error", HfHubHTTPError),
    (
        "claude-haiku-4-5-err529",
        "overloaded",
        ProviderError,
        "provider_error",
        anthropic.APIStatusError,
    ),
    ("gpt-4o-errjson", "malformed_json", ProviderError, "provider_error", json.JSONDecodeError),
]


@pytest.mark.parametrize(("model", "kind", "error", "category", "sdk_error"), INJECTED)
def test_injected_failures_are_raised_chained_and_recorded(
    sim_env: ProviderSimulator,
    make_router: Any,
    stored: Any,
    model: str,
    kind: str,
    error: type[ProviderError],
    category: str,
    sdk_error: type[BaseException],
) -> None:
    sim_env.set_script(model, ModelScript(**{kind: 1.0}))
    router = make_router("injected", [model], success_when=bool)

    with pytest.raises(error) as caught:
        router.completion(ask(SUM))

    raised = caught.value
    assert type(raised) is error
    assert isinstance(raised.__cause__, sdk_error)
    assert raised.failure_category == category
    assert (raised.goal, raised.model_id) == ("injected", model)
    assert [r.outcome for r in sim_env.records(model)] == [kind]  # no hidden SDK retries
    [outcome] = stored("injected")
    assert (outcome.trace_id, outcome.success) == (raised.trace_id, False)
    assert (outcome.failure_category, outcome.model_id) == (category, model)
    assert outcome.latency_ms is not None


@pytest.mark.parametrize(
    ("model", "sdk_error"),
    [
        ("gpt-4o-slowpoke", openai.APITimeoutError),
        ("claude-haiku-4-5-slowpoke", anthropic.APITimeoutError),
    ],
)
def test_a_provider_timeout_is_a_timeout_outcome(
    sim_env: ProviderSimulator,
    make_router: Any,
    stored: Any,
    model: str,
    sdk_error: type[BaseException],
) -> None:
    sim_env.set_script(model, ModelScript(timeout=1.0, timeout_s=1.0))
    router = make_router("timeouts", [model])

    with pytest.raises(ProviderTimeoutError) as caught:
        router.completion(ask(SUM), timeout=0.1)

    assert isinstance(caught.value.__cause__, sdk_error)
    [outcome] = stored("timeouts")
    assert (outcome.success, outcome.failure_category) == (False, "timeout")
    assert outcome.latency_ms is not None
    assert 100 <= outcome.latency_ms < 1000


@pytest.mark.parametrize(
    ("model", "sdk_error"),
    [
        ("gpt-4o-ctx16", openai.BadRequestError),
        ("claude-haiku-4-5-ctx16", anthropic.BadRequestError),
        ("org/tiny-ctx16", HfHubHTTPError),  # HTTP 422 from text-generation-inference
    ],
)
def test_a_prompt_over_the_context_window_is_context_exceeded(
    sim_env: ProviderSimulator,
    make_router: Any,
    stored: Any,
    model: str,
    sdk_error: type[BaseException],
) -> None:
    router = make_router("context", [model])
    assert router.completion(ask(SUM)).choices[0].message.content == "42"  # fits

    with pytest.raises(ContextExceededError) as caught:
        router.completion(ask(LONG))

    assert isinstance(caught.value.__cause__, sdk_error)
    [outcome] = stored("context")
    assert (outcome.success, outcome.failure_category) == (False, "context_exceeded")


def test_a_rejected_key_is_an_auth_error(
    sim_env: ProviderSimulator, make_router: Any, stored: Any, rejecting_url: str
) -> None:
    router = make_router(
        "revoked_key", [{"model": "gpt-4o", "provider": "openai", "base_url": rejecting_url}]
    )

    with pytest.raises(AuthenticationError) as caught:
        router.completion(ask(SUM))

    assert isinstance(caught.value.__cause__, openai.AuthenticationError)
    [outcome] = stored("revoked_key")
    assert (outcome.success, outcome.failure_category) == (False, "auth_error")


@pytest.mark.parametrize("model", ["gpt-4o-aerr429", "claude-haiku-4-5-aerr429"])
def test_async_failures_are_raised_chained_and_recorded(
    sim_env: ProviderSimulator, make_router: Any, stored: Any, model: str
) -> None:
    sim_env.set_script(model, ModelScript(rate_limit=1.0))
    router = make_router("async_injected", [model])

    async def call() -> Any:
        return await router.acompletion(ask(SUM))

    with pytest.raises(RateLimitedError) as caught:
        asyncio.run(call())

    assert caught.value.__cause__ is not None
    assert "RateLimitError" in type(caught.value.__cause__).__name__
    [outcome] = stored("async_injected")
    assert (outcome.trace_id, outcome.failure_category) == (caught.value.trace_id, "rate_limited")


def test_a_failure_is_not_reported_twice_by_the_caller(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    """The spec's pattern: completion() in try/except; the failure is already reported."""
    sim_env.set_script("gpt-4o-errtwice", ModelScript(server_error=1.0))
    router = make_router("failed_then_report", ["gpt-4o-errtwice"])

    with pytest.raises(ProviderError):
        router.completion(ask(SUM))
    with pytest.warns(UserWarning, match="already reported"):
        router.report(success=False, failure_category="unknown")

    assert [o.failure_category for o in stored("failed_then_report")] == ["provider_error"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("model", ["odd-list", "odd-choice", "odd-html"])
def test_a_200_that_is_not_a_completion_is_a_provider_error(
    sim_env: ProviderSimulator,
    make_router: Any,
    stored: Any,
    odd_body_url: str,
    model: str,
    provider: str,
) -> None:
    # The Router reads the completion's JSON itself (the SDK's raw response): a body that is
    # not one fails the call and is recorded, as the SDK's own parsing would have.
    router = make_router(
        "odd_bodies", [{"model": model, "provider": provider, "base_url": odd_body_url}]
    )

    with pytest.raises(ProviderError) as caught:
        router.completion(ask(SUM))

    assert type(caught.value) is ProviderError
    assert isinstance(caught.value.__cause__, ValueError)  # JSONDecodeError is one too
    assert caught.value.failure_category == "provider_error"
    [outcome] = stored("odd_bodies")
    assert (outcome.success, outcome.failure_category, outcome.model_id) == (
        False,
        "provider_error",
        model,
    )


def test_a_completion_is_read_whole_from_the_raw_response(
    sim_env: ProviderSimulator, make_router: Any
) -> None:
    router = make_router("whole_completion", ["gpt-4o"], success_when=bool)

    response = router.completion(ask(SUM), max_tokens=20)

    assert len(sim_env.records("gpt-4o")) == 1
    assert response.choices[0].message.content == "42"
    assert response.choices[0].finish_reason == "stop"
    assert response.model == "gpt-4o"
    assert response.id.startswith("chatcmpl-")
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert response.created > 0

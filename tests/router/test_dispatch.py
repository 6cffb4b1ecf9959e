"""Provider dispatch: each model string reaches its provider family through the real SDK.

Each family's own base-URL variable points at the simulator while every other family's points
at a closed loopback port, so a call that answers proves it went where the model name says.
"""

from __future__ import annotations

from typing import Any

import pytest

from kalibr_core import ConfigurationError
from kalibr_core.router import resolve_provider
from kalibr_core.simulator import ProviderSimulator, check_answer, count_tokens

DEAD_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing listens, connections are refused
PROMPT = "What is 17 + 25?"
URL_VARS = (
    "OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL",
    "DEEPSEEK_BASE_URL",
    "GOOGLE_BASE_URL",
    "OLLAMA_BASE_URL",
    "HF_BASE_URL",
)


def only_family(monkeypatch: pytest.MonkeyPatch, url_var: str, url: str) -> None:
    for name in URL_VARS:
        monkeypatch.setenv(name, url if name == url_var else DEAD_URL)


def new_records(sim: ProviderSimulator, before: int) -> list[tuple[str, str]]:
    return [(r.model, r.route) for r in sim.records()[before:]]


@pytest.mark.simulator
@pytest.mark.parametrize(
    ("path", "url_var", "sim_url", "route", "sent_model", "provider"),
    [
        ("gpt-4o", "OPENAI_BASE_URL", "openai", "openai.chat", "gpt-4o", "openai"),
        ("openai/gpt-4o-mini", "OPENAI_BASE_URL", "openai", "openai.chat", "gpt-4o-mini", "openai"),
        (
            "claude-sonnet-4-6",
            "ANTHROPIC_BASE_URL",
            "anthropic",
            "anthropic.messages",
            "claude-sonnet-4-6",
            "anthropic",
        ),
        (
            "anthropic/claude-haiku-4-5",
            "ANTHROPIC_BASE_URL",
            "anthropic",
            "anthropic.messages",
            "claude-haiku-4-5",
            "anthropic",
        ),
        (
            "deepseek-chat",
            "DEEPSEEK_BASE_URL",
            "openai",
            "openai.chat",
            "deepseek-chat",
            "deepseek",
        ),
        (
            "gemini-2.0-flash",
            "GOOGLE_BASE_URL",
            "openai",
            "openai.chat",
            "gemini-2.0-flash",
            "google",
        ),
        ("ollama/llama3", "OLLAMA_BASE_URL", "openai", "openai.chat", "llama3", "ollama"),
        (
            "meta-llama/Llama-3.1-8B-Instruct",
            "HF_BASE_URL",
            "hf",
            "hf.chat-completion",
            "meta-llama/Llama-3.1-8B-Instruct",
            "huggingface",
        ),
    ],
)
def test_each_family_is_called_through_its_own_sdk_and_endpoint(
    sim_env: ProviderSimulator,
    make_router: Any,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    url_var: str,
    sim_url: str,
    route: str,
    sent_model: str,
    provider: str,
) -> None:
    url = {
        "openai": sim_env.openai_base_url,
        "anthropic": sim_env.anthropic_base_url,
        "hf": sim_env.hf_base_url,
    }[sim_url]
    only_family(monkeypatch, url_var, url)
    router = make_router("dispatch", [path])
    before = len(sim_env.records())

    response = router.completion([{"role": "user", "content": PROMPT}], max_tokens=50)

    assert new_records(sim_env, before) == [(sent_model, route)]
    assert check_answer(PROMPT, response.choices[0].message.content)
    assert response.kalibr_provider == provider
    assert response.model == sent_model
    assert response.choices[0].finish_reason == "stop"


@pytest.mark.simulator
def test_a_family_key_is_read_from_its_own_variable(
    sim_env: ProviderSimulator, make_router: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DeepSeek and Gemini calls need no OpenAI key, though they go through the openai SDK."""
    monkeypatch.delenv("OPENAI_API_KEY")
    router = make_router("own_keys", ["deepseek-chat", "gemini-2.0-flash"])
    for model in ("deepseek-chat", "gemini-2.0-flash"):
        response = router.completion([{"role": "user", "content": PROMPT}], force_model=model)
        assert check_answer(PROMPT, response.choices[0].message.content)


@pytest.mark.simulator
def test_anthropic_gets_system_messages_as_its_system_parameter(
    sim_env: ProviderSimulator, make_router: Any
) -> None:
    # The simulator answers 400 to a "system" role inside Anthropic's messages, and counts the
    # system= text in the prompt tokens.
    system = "You are a careful assistant that answers arithmetic questions with one number only."
    router = make_router("anthropic_system", ["claude-sonnet-4-6"])
    plain = router.completion([{"role": "user", "content": PROMPT}])
    with_system = router.completion(
        [{"role": "system", "content": system}, {"role": "user", "content": PROMPT}]
    )

    assert with_system.choices[0].message.content == "42"
    assert with_system.usage.prompt_tokens - plain.usage.prompt_tokens == count_tokens(system)


@pytest.mark.simulator
def test_anthropic_stop_reasons_are_normalised_to_openai_finish_reasons(
    sim_env: ProviderSimulator, make_router: Any
) -> None:
    router = make_router("anthropic_finish", ["claude-sonnet-4-6"])
    long_prompt = "Tell me about the history of the harbour and the lighthouse keepers"
    add = {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            },
        },
    }

    ended = router.completion([{"role": "user", "content": PROMPT}])
    cut = router.completion([{"role": "user", "content": long_prompt}], max_tokens=2)
    stopped = router.completion([{"role": "user", "content": long_prompt}], stop=["history"])
    tool = router.completion([{"role": "user", "content": PROMPT}], tools=[add])

    assert ended.choices[0].finish_reason == "stop"  # end_turn
    assert cut.choices[0].finish_reason == "length"  # max_tokens
    assert cut.usage.completion_tokens <= 2
    assert stopped.choices[0].finish_reason == "stop"  # stop_sequence
    assert "history" not in stopped.choices[0].message.content
    assert tool.choices[0].finish_reason == "tool_calls"  # tool_use


@pytest.mark.simulator
def test_a_dict_path_with_provider_and_base_url_goes_to_that_server(
    sim_env: ProviderSimulator, make_router: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A self-hosted OpenAI-compatible server (vLLM, LM Studio...) needs no key variable."""
    only_family(monkeypatch, "none", DEAD_URL)
    monkeypatch.delenv("OPENAI_API_KEY")
    router = make_router(
        "custom_server",
        [{"model": "my-finetune", "provider": "vllm", "base_url": sim_env.openai_base_url}],
    )
    before = len(sim_env.records())

    response = router.completion([{"role": "user", "content": PROMPT}])

    assert new_records(sim_env, before) == [("my-finetune", "openai.chat")]
    assert response.kalibr_provider == "vllm"
    assert response.choices[0].message.content == "42"


@pytest.mark.simulator
def test_an_explicit_base_url_wins_over_the_family_variable(
    sim_env: ProviderSimulator, make_router: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", DEAD_URL)
    router = make_router(
        "explicit_url",
        [
            {
                "model": "claude-haiku-4-5",
                "provider": "anthropic",
                "base_url": sim_env.anthropic_base_url,
            }
        ],
    )
    response = router.completion([{"role": "user", "content": PROMPT}])
    assert response.kalibr_provider == "anthropic"
    assert response.choices[0].message.content == "42"


@pytest.mark.simulator
@pytest.mark.parametrize(
    ("path", "variable"),
    [
        ("claude-sonnet-4-6", "ANTHROPIC_API_KEY"),
        ("gpt-4o", "OPENAI_API_KEY"),
        ("deepseek-chat", "DEEPSEEK_API_KEY"),
        ({"model": "deepseek-chat", "api_key_env": "TEAM_DEEPSEEK_KEY"}, "TEAM_DEEPSEEK_KEY"),
    ],
)
def test_a_missing_key_names_the_variable_and_is_recorded_as_a_failure(
    sim_env: ProviderSimulator,
    make_router: Any,
    stored: Any,
    monkeypatch: pytest.MonkeyPatch,
    path: Any,
    variable: str,
) -> None:
    monkeypatch.delenv(variable, raising=False)
    router = make_router("missing_key", [path])
    before = len(sim_env.records())

    with pytest.raises(ConfigurationError, match=variable) as caught:
        router.completion([{"role": "user", "content": PROMPT}])

    assert new_records(sim_env, before) == []
    [outcome] = stored("missing_key")
    assert outcome.trace_id == caught.value.trace_id
    assert outcome.success is False
    assert outcome.failure_category == "auth_error"
    assert outcome.model_id == router.paths[0].model_id


@pytest.mark.simulator
def test_gemini_accepts_either_google_variable(
    sim_env: ProviderSimulator, make_router: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY")
    router = make_router("gemini_key", ["gemini-2.0-flash"])
    with pytest.raises(ConfigurationError, match="GOOGLE_API_KEY or GEMINI_API_KEY"):
        router.completion([{"role": "user", "content": PROMPT}])

    monkeypatch.setenv("GEMINI_API_KEY", "sim-key")
    response = router.completion([{"role": "user", "content": PROMPT}])
    assert response.choices[0].message.content == "42"


# -- resolve_provider, offline ------------------------------------------------------------------
@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        *URL_VARS,
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "DEEPSEEK_API_KEY",
        "GOOGLE_API_KEY",
        "GEMINI_API_KEY",
        "OLLAMA_API_KEY",
        "HF_API_TOKEN",
        "HF_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("model_id", "provider", "sdk", "model", "base_url", "key_required"),
    [
        ("gpt-4o", "openai", "openai", "gpt-4o", None, True),
        ("o3-mini", "openai", "openai", "o3-mini", None, True),
        ("chatgpt-4o-latest", "openai", "openai", "chatgpt-4o-latest", None, True),
        ("openai/gpt-4o", "openai", "openai", "gpt-4o", None, True),
        ("claude-3-5-haiku", "anthropic", "anthropic", "claude-3-5-haiku", None, True),
        ("anthropic/claude-opus-4", "anthropic", "anthropic", "claude-opus-4", None, True),
        (
            "gemini-2.0-flash",
            "google",
            "openai",
            "gemini-2.0-flash",
            "https://generativelanguage.googleapis.com/v1beta/openai/",
            True,
        ),
        (
            "google/gemini-1.5-pro",
            "google",
            "openai",
            "gemini-1.5-pro",
            "https://generativelanguage.googleapis.com/v1beta/openai/",
            True,
        ),
        ("deepseek-chat", "deepseek", "openai", "deepseek-chat", "https://api.deepseek.com", True),
        (
            "deepseek/deepseek-coder",
            "deepseek",
            "openai",
            "deepseek-coder",
            "https://api.deepseek.com",
            True,
        ),
        ("ollama/llama3", "ollama", "openai", "llama3", "http://localhost:11434/v1", False),
        ("mistralai/Mistral-7B-Instruct", "huggingface", "huggingface", None, None, False),
        ("some-local-model", "openai", "openai", "some-local-model", None, True),
    ],
)
def test_resolve_provider_by_prefix_and_name(
    bare_env: pytest.MonkeyPatch,
    model_id: str,
    provider: str,
    sdk: str,
    model: str | None,
    base_url: str | None,
    key_required: bool,
) -> None:
    target = resolve_provider(model_id)
    assert (target.provider, target.sdk, target.key_required) == (provider, sdk, key_required)
    assert target.model == (model or model_id)
    assert target.base_url == base_url


def test_resolve_provider_reads_base_urls_and_keys_from_the_environment(
    bare_env: pytest.MonkeyPatch,
) -> None:
    bare_env.setenv("DEEPSEEK_BASE_URL", "http://127.0.0.1:1234/v1")
    bare_env.setenv("DEEPSEEK_API_KEY", "ds-key")
    target = resolve_provider("deepseek-chat")
    assert target.base_url == "http://127.0.0.1:1234/v1"
    assert target.api_key() == "ds-key"

    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        resolve_provider("claude-sonnet-4").api_key()
    assert resolve_provider("ollama/llama3").api_key() is None  # no key needed
    bare_env.setenv("HF_TOKEN", "hf-key")
    assert resolve_provider("org/model").api_key() == "hf-key"


def test_resolve_provider_with_explicit_hints(bare_env: pytest.MonkeyPatch) -> None:
    custom = resolve_provider(
        "my-model", {"provider": "vllm", "base_url": "http://127.0.0.1:8000/v1"}
    )
    assert (custom.provider, custom.sdk, custom.base_url) == (
        "vllm",
        "openai",
        "http://127.0.0.1:8000/v1",
    )
    assert custom.key_required is False

    prefixed = resolve_provider("anthropic/claude-3-5-haiku", {"provider": "anthropic"})
    assert (prefixed.sdk, prefixed.model) == ("anthropic", "claude-3-5-haiku")

    keyed = resolve_provider("deepseek-chat", {"api_key_env": "TEAM_KEY"})
    assert keyed.api_key_env == ("TEAM_KEY",)

    with pytest.raises(ConfigurationError, match="unknown provider 'vllm'") as caught:
        resolve_provider("my-model", {"provider": "vllm"})
    assert "base_url" in str(caught.value)
    assert "anthropic" in str(caught.value)  # lists the known providers

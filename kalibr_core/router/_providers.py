"""Provider dispatch: which SDK, base URL and key a model string goes to, and cached clients.

Rules (first match wins):

* an explicit ``provider`` (and ``base_url``, ``api_key_env``) on a dict path;
* a prefix: ``openai/``, ``anthropic/``, ``google/``, ``deepseek/``, ``ollama/`` (stripped);
* a name: ``gpt-``, ``o1``, ``o3``, ``o4``, ``chatgpt-``, ``tts-``, ``whisper-`` go to OpenAI,
  ``claude-`` to Anthropic, ``gemini-`` to Google (its OpenAI-compatible endpoint),
  ``deepseek-`` to DeepSeek;
* any other ``org/model`` goes to HuggingFace (``huggingface_hub.InferenceClient``);
* anything else to OpenAI (or the OpenAI-compatible server at ``OPENAI_BASE_URL``).

Keys and base URLs come from the usual environment variables; a missing key raises
ConfigurationError naming the variable. SDK clients are cached per (provider, URL, key) so
connections are reused across calls and threads. Provider SDK retries are off by default
(``KALIBR_PROVIDER_MAX_RETRIES``): kalibr is not a retry system, and a retried failure would
hide from learning what happened.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from kalibr_core._errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """How to reach one provider family."""

    name: str
    sdk: str  # "openai", "anthropic" or "huggingface"
    key_env: tuple[str, ...]
    base_url_env: tuple[str, ...]
    default_base_url: str | None
    key_required: bool = True


PROVIDERS: Final[dict[str, ProviderSpec]] = {
    "openai": ProviderSpec("openai", "openai", ("OPENAI_API_KEY",), ("OPENAI_BASE_URL",), None),
    "anthropic": ProviderSpec(
        "anthropic", "anthropic", ("ANTHROPIC_API_KEY",), ("ANTHROPIC_BASE_URL",), None
    ),
    "google": ProviderSpec(
        "google",
        "openai",
        ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
        ("GOOGLE_BASE_URL",),
        "https://generativelanguage.googleapis.com/v1beta/openai/",
    ),
    "deepseek": ProviderSpec(
        "deepseek",
        "openai",
        ("DEEPSEEK_API_KEY",),
        ("DEEPSEEK_BASE_URL",),
        "https://api.deepseek.com",
    ),
    "ollama": ProviderSpec(
        "ollama",
        "openai",
        ("OLLAMA_API_KEY",),
        ("OLLAMA_BASE_URL",),
        "http://localhost:11434/v1",
        key_required=False,
    ),
    "huggingface": ProviderSpec(
        "huggingface",
        "huggingface",
        ("HF_API_TOKEN", "HF_TOKEN"),
        ("HF_BASE_URL",),
        None,
        key_required=False,
    ),
}

_PREFIXES: Final = ("openai", "anthropic", "google", "deepseek", "ollama")
_NAMES: Final = (
    (("gpt-", "o1", "o3", "o4", "chatgpt-", "tts-", "whisper-", "text-embedding-"), "openai"),
    (("claude-",), "anthropic"),
    (("gemini-",), "google"),
    (("deepseek-",), "deepseek"),
)


@dataclass(frozen=True, slots=True)
class ProviderTarget:
    """Where one call goes.

    Attributes:
        provider: The provider family (a key of PROVIDERS, or a custom name).
        sdk: Which SDK speaks to it.
        model: The model name sent to the provider (prefix stripped).
        base_url: The endpoint, or None for the SDK's default.
        api_key_env: The environment variables the key is read from, in order.
        key_required: Whether a missing key is an error.
    """

    provider: str
    sdk: str
    model: str
    base_url: str | None
    api_key_env: tuple[str, ...]
    key_required: bool

    def api_key(self) -> str | None:
        """The key from the environment; raises ConfigurationError if required and missing."""
        for name in self.api_key_env:
            value = os.environ.get(name)
            if value:
                return value
        if self.key_required:
            raise ConfigurationError(
                f"no API key for {self.provider} model {self.model!r}: set "
                + " or ".join(self.api_key_env),
                model_id=self.model,
            )
        return None


def resolve_provider(model_id: str, hints: Mapping[str, Any] | None = None) -> ProviderTarget:
    """Resolve a model string (and a path's hints) to a provider target.

    Raises:
        ConfigurationError: an explicit provider name is unknown and has no base_url.
    """
    hints = hints or {}
    model = model_id
    provider = hints.get("provider")
    if provider is None:
        provider, model = _implied_provider(model_id)
    elif isinstance(provider, str) and model_id.startswith(provider + "/"):
        model = model_id[len(provider) + 1 :]
    if not isinstance(provider, str):
        raise ConfigurationError(f"provider must be a string, got {provider!r}")
    spec = PROVIDERS.get(provider)
    base_url = hints.get("base_url")
    key_env = hints.get("api_key_env")
    if spec is None:
        if not base_url:
            raise ConfigurationError(
                f"unknown provider {provider!r} for model {model_id!r}: use one of "
                f"{sorted(PROVIDERS)} or give a base_url for an OpenAI-compatible server"
            )
        custom_env = (key_env,) if isinstance(key_env, str) else ("OPENAI_API_KEY",)
        return _target(provider, "openai", model, str(base_url), custom_env, False)
    if not base_url:
        base_url = spec.default_base_url
        for name in spec.base_url_env:  # read at every call: the environment may change
            value = os.environ.get(name)
            if value:
                base_url = value
                break
    env: tuple[str, ...] = (key_env,) if isinstance(key_env, str) else spec.key_env
    required = spec.key_required and not (provider == "openai" and hints.get("base_url"))
    return _target(provider, spec.sdk, model, base_url, env, required)


# Every routed call resolves its path: the name rules and the target depend only on their
# arguments, so each combination is worked out (and its frozen target built) once.
@functools.lru_cache(maxsize=1024)
def _implied_provider(model_id: str) -> tuple[str, str]:
    """The provider a model string implies by prefix or name, and the model name it is sent."""
    prefix, _, rest = model_id.partition("/")
    if rest and prefix in _PREFIXES:
        return prefix, rest
    if rest:
        return "huggingface", model_id
    lowered = model_id.lower()
    provider = next((name for prefixes, name in _NAMES if lowered.startswith(prefixes)), "openai")
    return provider, model_id


_cached_target = functools.lru_cache(maxsize=1024)(ProviderTarget)


def _target(
    provider: str,
    sdk: str,
    model: str,
    base_url: str | None,
    api_key_env: tuple[str, ...],
    key_required: bool,
) -> ProviderTarget:
    if base_url is None or type(base_url) is str:
        return _cached_target(provider, sdk, model, base_url, api_key_env, key_required)
    # A path's base_url hint is not checked: an unhashable one cannot be a cache key.
    return ProviderTarget(provider, sdk, model, base_url, api_key_env, key_required)


def _max_retries() -> int:
    raw = os.environ.get("KALIBR_PROVIDER_MAX_RETRIES", "0")
    try:
        return max(0, int(raw))
    except ValueError:
        raise ConfigurationError(
            f"KALIBR_PROVIDER_MAX_RETRIES must be an integer, got {raw!r}"
        ) from None


class ClientCache:
    """SDK clients shared across calls and threads, one per (sdk, async, URL, key).

    Async clients are also per event loop: their connection pool belongs to the loop that
    opened it, and reusing it from another loop (a second ``asyncio.run``) fails.
    """

    def __init__(self) -> None:
        self._clients: dict[
            tuple[str, bool, str | None, str | None, int],
            tuple[asyncio.AbstractEventLoop | None, Any],
        ] = {}
        self._lock = threading.Lock()

    def get(self, target: ProviderTarget, *, is_async: bool = False) -> Any:
        """The (cached) SDK client for a target."""
        key = target.api_key()
        loop = _running_loop() if is_async else None
        cache_key = (target.sdk, is_async, target.base_url, key, id(loop))
        entry = self._clients.get(cache_key)
        if entry is None or entry[0] is not loop:
            with self._lock:
                entry = self._clients.get(cache_key)
                if entry is None or entry[0] is not loop:
                    # Clients of closed loops can never be used again.
                    for stale in [k for k, (old, _) in self._clients.items() if _closed(old)]:
                        del self._clients[stale]
                    entry = (loop, _make_client(target, key, is_async))
                    self._clients[cache_key] = entry
        return entry[1]

    def close(self) -> None:
        """Close the sync clients (async ones close with their event loop)."""
        with self._lock:
            clients, self._clients = self._clients, {}
        for (_sdk, is_async, _url, _key, _loop), (_, client) in clients.items():
            closer = getattr(client, "close", None)
            if not is_async and callable(closer):
                closer()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _closed(loop: asyncio.AbstractEventLoop | None) -> bool:
    return loop is not None and loop.is_closed()


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"the {module!r} package is needed for this provider: "
            f"pip install 'kalibr-core[{extra}]'"
        ) from exc


def _make_client(target: ProviderTarget, key: str | None, is_async: bool) -> Any:
    retries = _max_retries()
    if target.sdk == "openai":
        openai = _require("openai", "providers")
        cls = openai.AsyncOpenAI if is_async else openai.OpenAI
        return cls(api_key=key or "not-needed", base_url=target.base_url, max_retries=retries)
    if target.sdk == "anthropic":
        anthropic = _require("anthropic", "providers")
        cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
        return cls(api_key=key or "not-needed", base_url=target.base_url, max_retries=retries)
    if target.sdk == "huggingface":
        hub = _require("huggingface_hub", "providers")
        cls = hub.AsyncInferenceClient if is_async else hub.InferenceClient
        if target.base_url:
            return cls(base_url=target.base_url, token=key)
        # No client-level model: one cached client serves every model (passed per call).
        return cls(token=key)
    raise ConfigurationError(f"no SDK for provider {target.provider!r}")

"""Routed calls beyond chat: the 17 HuggingFace tasks, speech synthesis and transcription.

:meth:`Router.execute`, :meth:`Router.synthesize` and :meth:`Router.transcribe` (and their
async forms) delegate here. Each call follows the same loop as ``completion()``: validate the
input (before routing, so a bad call never costs a decision), decide a path, call the provider
directly through its own SDK, measure latency and cost, then report the outcome with
``success_when`` / ``score_when`` applied to a text form of the result. Provider errors are
reported with their failure category and re-raised as kalibr errors chained to the SDK's.

What ``success_when`` / ``score_when`` receive (``output``) for ``execute``; an empty result is
always given as ``""`` and, without callbacks, reported as ``empty_response``:

============================== ===========================================================
task                           ``output``
============================== ===========================================================
chat_completion                the assistant message text (the tool calls as JSON if none)
text_generation                the generated text
summarization                  ``summary_text``
translation                    ``translation_text``
automatic_speech_recognition   the transcribed ``text``
image_to_text                  the caption (``generated_text``)
table_question_answering       the ``answer``
fill_mask                      JSON list of ``{"score", "sequence", "token", "token_str"}``
text_classification            JSON list of ``{"label", "score"}``, best first
audio_classification           JSON list of ``{"label", "score"}``, best first
image_classification           JSON list of ``{"label", "score"}``, best first
token_classification           JSON list of entities (``entity_group``, ``word``, ``score``,
                               ``start``, ``end``)
object_detection               JSON list of ``{"label", "score", "box": {xmin, ymin, ...}}``
image_segmentation             JSON list of ``{"label", "score", "mask": {"width", "height"}}``
feature_extraction             JSON nested list of floats (the embedding vectors)
text_to_speech                 JSON ``{"format": "wav", "bytes": 12345}``
text_to_image                  JSON ``{"width", "height", "mode"}``; a single-colour image
                               (a safety-filtered or failed generation) counts as empty
============================== ===========================================================

``synthesize`` gives ``{"format", "bytes", "characters"}`` as JSON (``""`` for no audio);
``transcribe`` gives the transcript text.

Where calls go:

* ``execute``: every path is a HuggingFace model id (``"openai/whisper-large-v3"`` included;
  an explicit ``provider`` other than ``huggingface`` is a ConfigurationError). With
  ``HF_BASE_URL`` (or a path's ``base_url``), a deployment of the HuggingFace inference router
  layout, each task is sent to ``{HF_BASE_URL}/models/{model}/pipeline/{task}`` and chat to
  ``{HF_BASE_URL}/v1/chat/completions``. Without it the SDK's default applies: a bare model id,
  resolved by ``huggingface_hub`` online (never done by the tests).
* ``synthesize`` / ``transcribe``: ``tts-*``, ``gpt-4o-mini-tts``, ``whisper-*``,
  ``gpt-4o-*transcribe`` (and other plain names) go to OpenAI (``OPENAI_BASE_URL`` honoured),
  ``eleven_*`` to ElevenLabs (``ELEVENLABS_API_KEY``), ``nova-*``, ``aura-*``, ``enhanced``,
  ``base`` to Deepgram (``DEEPGRAM_API_KEY``), other ``org/name`` ids to HuggingFace's
  ``text_to_speech`` / ``automatic_speech_recognition``; a path's ``provider`` wins. The
  ``voice`` argument is OpenAI's voice name or an ElevenLabs voice id (Deepgram Aura and HF
  models carry the voice in the model); a path's ``params["voice"]`` wins over it. Every path
  must be able to serve the call (SDK installed, an audio API), checked before routing.

ElevenLabs and Deepgram are optional (``pip install 'kalibr-core[voice]'``), imported at the
point of use, and their code paths are deliberately small. The provider simulator has no route
for them, so offline they are only run against a fake of the SDK surface (kalibr's plumbing:
keys, cost, outcomes), never against the real SDKs; they follow the SDKs' documented calls
(``elevenlabs`` ``text_to_speech.convert``; ``deepgram-sdk`` >= 5
``listen.v1.media.transcribe_file`` and ``speak.v1.audio.generate``). Their SDK clients are
created per call and their async forms run the sync SDK in a worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import io
import json
import logging
import math
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from kalibr_core._domain import PathSpec, normalise_path
from kalibr_core._errors import ConfigurationError, ValidationError
from kalibr_core.router._outcomes import Trace, config_failure
from kalibr_core.router._pricing import speech_cost, token_cost, transcription_cost
from kalibr_core.router._providers import ProviderTarget, _require, resolve_provider
from kalibr_core.router._types import SpeechResult, TranscriptionResult

if TYPE_CHECKING:
    from kalibr_core.router._router import Router

logger = logging.getLogger("kalibr_core.router")

VOICE_EXTRA: Final = "voice"
_HF_INPUT_PARAMS: Final = frozenset(
    {"self", "model", "messages", "prompt", "text", "audio", "image", "table", "query"}
)


# -- execute: the task table --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Task:
    """How one HuggingFace task takes its input and renders its result for the callbacks."""

    kind: str  # "messages", "text", "texts", "table", "audio" or "image"
    render: Callable[[Any], str]


def _field_text(name: str) -> Callable[[Any], str]:
    def render(result: Any) -> str:
        if isinstance(result, list):  # some deployments answer with a one-element list
            result = result[0] if result else None
        if isinstance(result, str):
            return result
        value = getattr(result, name, None)
        return value if isinstance(value, str) else ""

    return render


def _render_chat(result: Any) -> str:
    choices = getattr(result, "choices", None) or []
    if not choices:
        return ""
    message = choices[0].message
    content = getattr(message, "content", None)
    if content:
        return str(content)
    calls = getattr(message, "tool_calls", None)
    return json.dumps(_plain(calls)) if calls else ""


def _render_json(result: Any) -> str:
    if result is None or (isinstance(result, Sequence) and len(result) == 0):
        return ""
    return json.dumps(_plain(result), separators=(",", ":"))


def _render_embedding(result: Any) -> str:
    size = getattr(result, "size", None)
    if size == 0 or (size is None and not result):
        return ""
    vectors = result.tolist() if hasattr(result, "tolist") else result
    return json.dumps(vectors, separators=(",", ":"))


def _render_audio(result: Any) -> str:
    if not result:
        return ""
    data = bytes(result)
    return json.dumps({"format": audio_format(data) or "unknown", "bytes": len(data)})


def _render_image(image: Any) -> str:
    width, height = image.size
    if width * height == 0:
        return ""
    extrema = image.getextrema()
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    if all(low == high for low, high in bands):  # a blank (e.g. safety-filtered) image
        return ""
    return json.dumps({"width": width, "height": height, "mode": image.mode})


def _render_generation(result: Any) -> str:
    if isinstance(result, str):
        return result
    text = getattr(result, "generated_text", None)
    return text if isinstance(text, str) else ""


_TASKS: Final[dict[str, _Task]] = {
    "chat_completion": _Task("messages", _render_chat),
    "text_generation": _Task("text", _render_generation),
    "summarization": _Task("text", _field_text("summary_text")),
    "translation": _Task("text", _field_text("translation_text")),
    "fill_mask": _Task("text", _render_json),
    "table_question_answering": _Task("table", _field_text("answer")),
    "automatic_speech_recognition": _Task("audio", _field_text("text")),
    "text_to_speech": _Task("text", _render_audio),
    "audio_classification": _Task("audio", _render_json),
    "text_to_image": _Task("text", _render_image),
    "image_to_text": _Task("image", _field_text("generated_text")),
    "image_classification": _Task("image", _render_json),
    "image_segmentation": _Task("image", _render_json),
    "object_detection": _Task("image", _render_json),
    "feature_extraction": _Task("texts", _render_embedding),
    "text_classification": _Task("text", _render_json),
    "token_classification": _Task("text", _render_json),
}

HF_TASKS: Final[tuple[str, ...]] = tuple(_TASKS)
"""The 17 HuggingFace task types :meth:`Router.execute` routes (``InferenceClient`` methods)."""


def _plain(value: Any) -> Any:
    """A JSON-ready form of an SDK result: dicts, lists, numbers; images become their size."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return {"bytes": len(value)}
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "getextrema") and hasattr(value, "size"):
        return {"width": value.size[0], "height": value.size[1]}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    return str(value)


@dataclass(slots=True)
class _TaskCall:
    """A validated execute() call, ready to route."""

    task: str
    spec: _Task
    payload: Any
    kwargs: dict[str, Any]
    accepted: frozenset[str]
    force_model: str | None


@functools.cache
def _hf_method_params(task: str) -> frozenset[str]:
    """The keyword arguments ``InferenceClient.<task>`` takes besides its input and model."""
    hub = _require("huggingface_hub", "providers")
    signature = inspect.signature(getattr(hub.InferenceClient, task))
    return frozenset(signature.parameters) - _HF_INPUT_PARAMS


def _prepare_task(
    router: Router, task: object, input_data: Any, kwargs: dict[str, Any]
) -> _TaskCall:
    goal = router.goal
    if not isinstance(task, str) or task.replace("-", "_") not in _TASKS:
        raise ValidationError(
            f"unknown task {task!r}; execute() supports: {', '.join(HF_TASKS)}",
            field="task",
            goal=goal,
        )
    name = task.replace("-", "_")
    spec = _TASKS[name]
    force_model = kwargs.pop("force_model", None)
    if kwargs.get("stream"):
        raise ValidationError(
            "execute() does not stream; use completion(stream=True) for streamed chat",
            field="stream",
            goal=goal,
        )
    accepted = _hf_method_params(name)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValidationError(
            f"{name} does not take {', '.join(unknown)}; it takes: {', '.join(sorted(accepted))}",
            field=unknown[0],
            goal=goal,
        )
    payload = _task_input(name, spec.kind, input_data, goal)
    _require_hf_paths(router, force_model)
    return _TaskCall(name, spec, payload, kwargs, accepted, force_model)


def _nonempty_text(value: Any, what: str, goal: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{what} must be a non-empty string", field="input_data", goal=goal)
    return value


def _task_input(task: str, kind: str, data: Any, goal: str) -> Any:
    if kind == "text":
        return _nonempty_text(data, f"input_data of {task}", goal)
    if kind == "texts":
        if isinstance(data, list) and data:
            return [_nonempty_text(item, "each text of feature_extraction", goal) for item in data]
        return _nonempty_text(data, "input_data of feature_extraction (a text or a list)", goal)
    if kind == "messages":
        if isinstance(data, str):
            return [{"role": "user", "content": _nonempty_text(data, "the prompt", goal)}]
        if (
            isinstance(data, Sequence)
            and data
            and all(isinstance(m, Mapping) and isinstance(m.get("role"), str) for m in data)
        ):
            return [dict(m) for m in data]
        raise ValidationError(
            "input_data of chat_completion must be a prompt or a non-empty list of "
            "OpenAI-format messages",
            field="input_data",
            goal=goal,
        )
    if kind == "table":
        if (
            isinstance(data, Mapping)
            and isinstance(data.get("table"), Mapping)
            and isinstance(data.get("query"), str)
            and data["query"].strip()
        ):
            return {"table": dict(data["table"]), "query": data["query"]}
        raise ValidationError(
            "input_data of table_question_answering must be {'table': {column: [cells]}, "
            "'query': 'question'}",
            field="input_data",
            goal=goal,
        )
    return _binary_input(task, kind, data, goal)


def _binary_input(task: str, kind: str, data: Any, goal: str) -> Any:
    if isinstance(data, bytes | bytearray | memoryview):
        if not len(data):
            raise ValidationError(f"input_data of {task} is empty", field="input_data", goal=goal)
        return bytes(data)
    if isinstance(data, str) and data.startswith(("http://", "https://")):
        return data  # the SDK fetches it
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        if not path.is_file():
            raise ValidationError(
                f"input_data of {task}: no file at {str(path)!r}", field="input_data", goal=goal
            )
        return path
    if kind == "image" and hasattr(data, "save") and hasattr(data, "mode"):
        buffer = io.BytesIO()  # InferenceClient does not take PIL images despite its hint
        data.save(buffer, format="PNG")
        return buffer.getvalue()
    accepted = "bytes, a file path or URL" + (", or a PIL image" if kind == "image" else "")
    raise ValidationError(
        f"input_data of {task} must be {kind} as {accepted}, got {type(data).__name__}",
        field="input_data",
        goal=goal,
    )


def _hf_target(spec: PathSpec) -> ProviderTarget:
    hints = dict(spec.extra)
    hints.setdefault("provider", "huggingface")
    return resolve_provider(spec.model_id, hints)


def _hf_model_arg(target: ProviderTarget, task: str) -> str:
    """The model= argument: a model URL under a base URL, else the bare id (SDK default)."""
    if target.base_url is None or task == "chat_completion":
        return target.model
    model = urllib.parse.quote(target.model, safe="/")
    return f"{target.base_url.rstrip('/')}/models/{model}/pipeline/{task.replace('_', '-')}"


def _invoke_task(client: Any, call: _TaskCall, model: str, params: Mapping[str, Any]) -> Any:
    """Call the InferenceClient method (returns a coroutine for the async client)."""
    method = getattr(client, call.task)
    if call.spec.kind == "table":
        return method(
            table=call.payload["table"], query=call.payload["query"], model=model, **params
        )
    return method(call.payload, model=model, **params)


def _task_params(call: _TaskCall, spec: PathSpec) -> dict[str, Any]:
    ignored = sorted(set(spec.params) - call.accepted)
    if ignored:
        logger.debug("%s ignores path params %s of %s", call.task, ignored, spec.model_id)
    params = {k: v for k, v in spec.params.items() if k in call.accepted}
    return {**params, **call.kwargs}


def _start_task(
    router: Router, call: _TaskCall, *, is_async: bool
) -> tuple[Trace, Any, str, dict[str, Any]]:
    trace = router._begin(call.force_model)
    target = _hf_target(trace.path)
    trace.provider = target.provider
    client = router._client_or_fail(trace, target, is_async=is_async)
    return trace, client, _hf_model_arg(target, call.task), _task_params(call, trace.path)


def _finish_task(
    router: Router, trace: Trace, call: _TaskCall, result: Any, started: float
) -> None:
    trace.latency_ms = (time.perf_counter() - started) * 1000
    usage = getattr(result, "usage", None) if call.task == "chat_completion" else None
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    if usage is not None:
        trace.input_tokens, trace.output_tokens = prompt, completion
    trace.cost_usd = token_cost(
        trace.path.model_id, prompt, completion, trace.path.extra.get("pricing")
    )
    try:
        output = call.spec.render(result)
    except (AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
        logger.warning("could not render the %s result for the callbacks (%s)", call.task, exc)
        output = str(result)
    router._evaluate(trace, output, False)


def execute(router: Router, task: object, input_data: Any, kwargs: dict[str, Any]) -> Any:
    """Implementation of :meth:`Router.execute`."""
    call = _prepare_task(router, task, input_data, kwargs)
    trace, client, model, params = _start_task(router, call, is_async=False)
    started = time.perf_counter()
    try:
        result = _invoke_task(client, call, model, params)
    except Exception as exc:
        raise router._provider_failure(trace, exc, started) from exc
    _finish_task(router, trace, call, result, started)
    return result


async def aexecute(router: Router, task: object, input_data: Any, kwargs: dict[str, Any]) -> Any:
    """Implementation of :meth:`Router.aexecute` (``huggingface_hub.AsyncInferenceClient``)."""
    call = _prepare_task(router, task, input_data, kwargs)
    trace, client, model, params = _start_task(router, call, is_async=True)
    started = time.perf_counter()
    try:
        result = await _invoke_task(client, call, model, params)
    except Exception as exc:
        raise await _afailure(router, trace, exc, started) from exc
    await asyncio.to_thread(_finish_task, router, trace, call, result, started)
    return result


async def _afailure(router: Router, trace: Trace, exc: Exception, started: float) -> Exception:
    """Async form of ``Router._provider_failure``: measure, report (off the loop), return."""
    category, error = router._measure_failure(trace, exc, started)
    await asyncio.to_thread(router._record, trace, False, None, category, str(exc)[:1000])
    return error


# -- audio: provider detection -------------------------------------------------------------------

# provider -> (module, client class, key variable)
_VOICE_SDKS: Final[dict[str, tuple[str, str, str]]] = {
    "elevenlabs": ("elevenlabs.client", "ElevenLabs", "ELEVENLABS_API_KEY"),
    "deepgram": ("deepgram", "DeepgramClient", "DEEPGRAM_API_KEY"),
}
_KNOWN_PREFIXES: Final = ("openai", "anthropic", "google", "deepseek", "ollama")


def audio_provider(spec: PathSpec) -> str:
    """The provider family of an audio path: openai, elevenlabs, deepgram, huggingface...

    Args:
        spec: The path (its ``provider`` hint wins over the model name).
    """
    explicit = spec.extra.get("provider")
    if isinstance(explicit, str):
        return explicit
    prefix, _, rest = spec.model_id.partition("/")
    if rest and prefix in _VOICE_SDKS:
        return prefix
    name = spec.model_id.lower()
    if name.startswith("eleven_"):
        return "elevenlabs"
    if name in ("nova", "enhanced", "base") or name.startswith(
        ("nova-", "aura-", "enhanced-", "base-")
    ):
        return "deepgram"
    if rest and prefix not in _KNOWN_PREFIXES:
        return "huggingface"
    return resolve_provider(spec.model_id, spec.extra).provider


def _bare_model(spec: PathSpec, provider: str) -> str:
    return spec.model_id.removeprefix(provider + "/")


def _candidate_paths(router: Router, force_model: object) -> list[PathSpec]:
    specs = list(router.paths)
    if isinstance(force_model, str) and force_model not in {s.model_id for s in specs}:
        specs.append(normalise_path(router.goal, force_model))
    return specs


def _require_hf_paths(router: Router, force_model: object) -> None:
    """execute() runs HuggingFace models only: checked for every path before routing."""
    for spec in _candidate_paths(router, force_model):
        target = _hf_target(spec)
        if target.sdk != "huggingface":
            raise ConfigurationError(
                f"execute() runs HuggingFace models; path {spec.model_id!r} has provider "
                f"{target.provider!r} (use completion(), synthesize() or transcribe())",
                goal=router.goal,
                model_id=spec.model_id,
            )


def _require_audio_paths(router: Router, force_model: object, method: str) -> None:
    """Every path must be able to serve ``method`` (synthesize / transcribe): checked before
    routing, so a path that can never run here is a configuration error, not an outcome."""
    for spec in _candidate_paths(router, force_model):
        provider = audio_provider(spec)
        problem = None
        if provider in _VOICE_SDKS:
            package = _VOICE_SDKS[provider][0].partition(".")[0]
            if method == "transcribe" and provider == "elevenlabs":
                problem = "ElevenLabs voice models do not transcribe"
            elif importlib.util.find_spec(package) is None:
                problem = (
                    f"it needs the {package!r} package: pip install 'kalibr-core[{VOICE_EXTRA}]'"
                )
        elif provider != "huggingface":
            target = resolve_provider(spec.model_id, spec.extra)
            if target.sdk != "openai":
                problem = f"{target.provider} has no audio API in kalibr (OpenAI-compatible only)"
        if problem is not None:
            raise ConfigurationError(
                f"{method}() cannot run path {spec.model_id!r}: {problem}",
                goal=router.goal,
                model_id=spec.model_id,
            )


def _voice_client(router: Router, trace: Trace, provider: str) -> Any:
    """A fresh ElevenLabs or Deepgram client (a missing key or SDK is reported, then raised)."""
    module_name, class_name, key_env = _VOICE_SDKS[provider]
    try:
        key = os.environ.get(key_env)
        if not key:
            raise ConfigurationError(
                f"no API key for {provider} model {trace.path.model_id!r}: set {key_env}",
                model_id=trace.path.model_id,
            )
        client = getattr(_require(module_name, VOICE_EXTRA), class_name)(api_key=key)
        if provider == "deepgram" and not hasattr(getattr(client, "listen", None), "v1"):
            raise ConfigurationError(
                "Deepgram needs deepgram-sdk>=5 (client.listen.v1): "
                f"pip install -U 'kalibr-core[{VOICE_EXTRA}]'"
            )
        return client
    except ConfigurationError as exc:
        category, _ = config_failure(exc)
        router._record(trace, False, None, category, str(exc))
        exc.goal, exc.trace_id = router.goal, trace.trace_id
        raise


def audio_format(data: bytes) -> str | None:
    """The container of audio bytes from their magic number (None if unknown).

    Args:
        data: Audio bytes.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "ogg"
    if data[4:8] == b"ftyp":
        return "m4a"
    if data[:4] == b"\x1aE\xdf\xa3":
        return "webm"
    return None


# -- synthesize --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Speech:
    text: str
    voice: str
    kwargs: dict[str, Any]
    force_model: str | None


def _prepare_speech(router: Router, text: object, voice: object, kwargs: dict[str, Any]) -> _Speech:
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("text must be a non-empty string", field="text", goal=router.goal)
    if not isinstance(voice, str) or not voice:
        raise ValidationError("voice must be a non-empty string", field="voice", goal=router.goal)
    force_model = kwargs.pop("force_model", None)
    _require_audio_paths(router, force_model, "synthesize")
    return _Speech(text, voice, kwargs, force_model)


def _speech_call(router: Router, trace: Trace, speech: _Speech, *, is_async: bool) -> Any:
    """A zero-argument callable doing the provider call (a coroutine function when async)."""
    spec = trace.path
    provider = audio_provider(spec)
    trace.provider = provider
    params: dict[str, Any] = {**spec.params, **speech.kwargs}
    voice = str(params.pop("voice", speech.voice))  # voices are provider-specific: path wins
    if provider in _VOICE_SDKS:
        client = _voice_client(router, trace, provider)
        model = _bare_model(spec, provider)
        if provider == "elevenlabs":
            params.setdefault("output_format", "mp3_44100_128")

            def call() -> bytes:
                chunks = client.text_to_speech.convert(
                    voice_id=voice, model_id=model, text=speech.text, **params
                )
                return b"".join(chunks)

        else:

            def call() -> bytes:
                return b"".join(
                    client.speak.v1.audio.generate(text=speech.text, model=model, **params)
                )

        if is_async:

            async def acall() -> bytes:
                return await asyncio.to_thread(call)

            return acall
        return call
    if provider == "huggingface":
        target = _hf_target(spec)
        client = router._client_or_fail(trace, target, is_async=is_async)
        model = _hf_model_arg(target, "text_to_speech")
        hf_params = {k: v for k, v in params.items() if k in _hf_method_params("text_to_speech")}
        return lambda: client.text_to_speech(speech.text, model=model, **hf_params)
    target = resolve_provider(spec.model_id, spec.extra)
    client = router._client_or_fail(trace, target, is_async=is_async)
    params.setdefault("response_format", "mp3")
    if is_async:

        async def aopenai() -> bytes:
            response = await client.audio.speech.create(
                model=target.model, voice=voice, input=speech.text, **params
            )
            return bytes(response.content)

        return aopenai
    return lambda: (
        client.audio.speech.create(
            model=target.model, voice=voice, input=speech.text, **params
        ).content
    )


def _finish_speech(
    router: Router, trace: Trace, speech: _Speech, audio: Any, started: float
) -> SpeechResult:
    trace.latency_ms = (time.perf_counter() - started) * 1000
    data = bytes(audio or b"")
    pricing = trace.path.extra.get("pricing")
    trace.cost_usd = speech_cost(trace.path.model_id, len(speech.text), pricing)
    requested = speech.kwargs.get("response_format") or speech.kwargs.get("output_format")
    fmt = audio_format(data) or str(requested or "mp3").partition("_")[0]
    output = (
        json.dumps({"format": fmt, "bytes": len(data), "characters": len(speech.text)})
        if data
        else ""
    )
    router._evaluate(trace, output, False)
    return SpeechResult(
        audio=data,
        model=trace.path.model_id,
        format=fmt,
        cost_usd=trace.cost_usd,
        latency_ms=round(trace.latency_ms, 3),
        kalibr_trace_id=trace.trace_id,
    )


def synthesize(router: Router, text: object, voice: object, kwargs: dict[str, Any]) -> SpeechResult:
    """Implementation of :meth:`Router.synthesize`."""
    speech = _prepare_speech(router, text, voice, kwargs)
    trace = router._begin(speech.force_model)
    call = _speech_call(router, trace, speech, is_async=False)
    started = time.perf_counter()
    try:
        audio = call()
    except Exception as exc:
        raise router._provider_failure(trace, exc, started) from exc
    return _finish_speech(router, trace, speech, audio, started)


async def asynthesize(
    router: Router, text: object, voice: object, kwargs: dict[str, Any]
) -> SpeechResult:
    """Implementation of :meth:`Router.asynthesize`."""
    speech = _prepare_speech(router, text, voice, kwargs)
    trace = router._begin(speech.force_model)
    call = _speech_call(router, trace, speech, is_async=True)
    started = time.perf_counter()
    try:
        audio = await call()
    except Exception as exc:
        raise await _afailure(router, trace, exc, started) from exc
    return await asyncio.to_thread(_finish_speech, router, trace, speech, audio, started)


# -- transcribe --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Audio:
    data: bytes
    filename: str
    seconds: float | None
    kwargs: dict[str, Any]
    force_model: str | None


def _prepare_audio(
    router: Router, audio: object, seconds: object, kwargs: dict[str, Any]
) -> _Audio:
    goal = router.goal
    if isinstance(audio, bytes | bytearray | memoryview):
        data, filename = bytes(audio), None
    elif isinstance(audio, str | os.PathLike):
        path = Path(audio)
        if not path.is_file():
            raise ValidationError(f"no audio file at {str(path)!r}", field="audio", goal=goal)
        data, filename = path.read_bytes(), path.name
    else:
        raise ValidationError(
            f"audio must be bytes or a file path, got {type(audio).__name__}",
            field="audio",
            goal=goal,
        )
    if not data:
        raise ValidationError("audio is empty", field="audio", goal=goal)
    if seconds is not None and (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise ValidationError(
            "audio_duration_seconds must be a non-negative number",
            field="audio_duration_seconds",
            goal=goal,
        )
    force_model = kwargs.pop("force_model", None)
    _require_audio_paths(router, force_model, "transcribe")
    filename = filename or f"audio.{audio_format(data) or 'wav'}"
    return _Audio(data, filename, None if seconds is None else float(seconds), kwargs, force_model)


def _transcript(provider: str, result: Any) -> tuple[str, float | None]:
    """(text, audio seconds the provider reported) from a transcription response."""
    if isinstance(result, str):  # OpenAI response_format text / srt / vtt
        return result, None
    if provider == "deepgram":
        channels = getattr(getattr(result, "results", None), "channels", None) or []
        alternatives = channels[0].alternatives if channels else []
        text = alternatives[0].transcript if alternatives else ""
        duration = getattr(getattr(result, "metadata", None), "duration", None)
        return str(text or ""), float(duration) if isinstance(duration, int | float) else None
    text = getattr(result, "text", "")
    usage = getattr(result, "usage", None)
    seconds = getattr(usage, "seconds", None) or getattr(result, "duration", None)
    return str(text or ""), float(seconds) if isinstance(seconds, int | float) else None


def _transcribe_call(router: Router, trace: Trace, audio: _Audio, *, is_async: bool) -> Any:
    spec = trace.path
    provider = audio_provider(spec)
    trace.provider = provider
    params: dict[str, Any] = {**spec.params, **audio.kwargs}
    if provider == "deepgram":
        client = _voice_client(router, trace, provider)
        model = _bare_model(spec, provider)

        def call() -> Any:
            return client.listen.v1.media.transcribe_file(request=audio.data, model=model, **params)

        if is_async:

            async def acall() -> Any:
                return await asyncio.to_thread(call)

            return acall
        return call
    if provider == "huggingface":
        target = _hf_target(spec)
        client = router._client_or_fail(trace, target, is_async=is_async)
        model = _hf_model_arg(target, "automatic_speech_recognition")
        accepted = _hf_method_params("automatic_speech_recognition")
        hf_params = {k: v for k, v in params.items() if k in accepted}
        return lambda: client.automatic_speech_recognition(audio.data, model=model, **hf_params)
    target = resolve_provider(spec.model_id, spec.extra)
    client = router._client_or_fail(trace, target, is_async=is_async)
    return lambda: client.audio.transcriptions.create(
        model=target.model, file=(audio.filename, audio.data), **params
    )


def _finish_transcription(
    router: Router, trace: Trace, audio: _Audio, result: Any, started: float
) -> TranscriptionResult:
    trace.latency_ms = (time.perf_counter() - started) * 1000
    text, reported = _transcript(trace.provider, result)
    seconds = audio.seconds if audio.seconds is not None else reported
    trace.cost_usd = transcription_cost(
        trace.path.model_id, seconds, trace.path.extra.get("pricing")
    )
    router._evaluate(trace, text, False)
    return TranscriptionResult(
        text=text,
        model=trace.path.model_id,
        cost_usd=trace.cost_usd,
        latency_ms=round(trace.latency_ms, 3),
        kalibr_trace_id=trace.trace_id,
    )


def transcribe(
    router: Router, audio: object, seconds: object, kwargs: dict[str, Any]
) -> TranscriptionResult:
    """Implementation of :meth:`Router.transcribe`."""
    prepared = _prepare_audio(router, audio, seconds, kwargs)
    trace = router._begin(prepared.force_model)
    call = _transcribe_call(router, trace, prepared, is_async=False)
    started = time.perf_counter()
    try:
        result = call()
    except Exception as exc:
        raise router._provider_failure(trace, exc, started) from exc
    return _finish_transcription(router, trace, prepared, result, started)


async def atranscribe(
    router: Router, audio: object, seconds: object, kwargs: dict[str, Any]
) -> TranscriptionResult:
    """Implementation of :meth:`Router.atranscribe`."""
    prepared = _prepare_audio(router, audio, seconds, kwargs)
    trace = router._begin(prepared.force_model)
    call = _transcribe_call(router, trace, prepared, is_async=True)
    started = time.perf_counter()
    try:
        result = await call()
    except Exception as exc:
        raise await _afailure(router, trace, exc, started) from exc
    return await asyncio.to_thread(_finish_transcription, router, trace, prepared, result, started)

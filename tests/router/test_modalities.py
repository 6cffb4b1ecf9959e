"""Router.execute / synthesize / transcribe through the real SDKs against the provider simulator.

``huggingface_hub.InferenceClient`` and ``openai.OpenAI`` talk to a loopback
:class:`ProviderSimulator`; nothing leaves the machine (``HF_BASE_URL`` always points at the
simulator, so no bare model id is ever resolved online). The fixtures are this module's own.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import io
import json
import sys
import types
import wave
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import openai
import pytest
from huggingface_hub import errors as hf_errors
from huggingface_hub.inference._generated import types as hf_types
from PIL import Image

from kalibr_core import (
    ConfigurationError,
    Intelligence,
    ProviderError,
    RateLimitedError,
    ValidationError,
)
from kalibr_core.router import HF_TASKS, Router, SpeechResult, TranscriptionResult
from kalibr_core.router._modalities import audio_provider
from kalibr_core.simulator import HF_TASKS as SIM_HF_TASKS
from kalibr_core.simulator import ModelScript, ProviderSimulator, Schedule
from kalibr_core.store import OutcomeRecord

pytestmark = pytest.mark.simulator

SEED = 20240611
SPEC_TASKS = (  # the "Supported task types" of the spec, in its order
    "chat_completion",
    "text_generation",
    "summarization",
    "translation",
    "fill_mask",
    "table_question_answering",
    "automatic_speech_recognition",
    "text_to_speech",
    "audio_classification",
    "text_to_image",
    "image_to_text",
    "image_classification",
    "image_segmentation",
    "object_detection",
    "feature_extraction",
    "text_classification",
    "token_classification",
)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def modal_sim() -> Iterator[ProviderSimulator]:
    """One simulator for the module; each test scripts model names of its own."""
    with ProviderSimulator(seed=SEED) as simulator:
        yield simulator


@pytest.fixture
def sim(modal_sim: ProviderSimulator, monkeypatch: pytest.MonkeyPatch) -> ProviderSimulator:
    """The simulator, with the OpenAI and HuggingFace SDKs pointed at it."""
    monkeypatch.setenv("HF_BASE_URL", modal_sim.hf_base_url)
    monkeypatch.setenv("OPENAI_BASE_URL", modal_sim.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sim-key")
    for name in ("HF_TOKEN", "HF_API_TOKEN", "KALIBR_PROVIDER_MAX_RETRIES", "KALIBR_SESSION_ID"):
        monkeypatch.delenv(name, raising=False)
    return modal_sim


@pytest.fixture
def intel() -> Iterator[Intelligence]:
    instance = Intelligence(":memory:", seed=SEED)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def make_router(intel: Intelligence) -> Callable[..., Router]:
    def make(goal: str, paths: Any, **kwargs: Any) -> Router:
        return Router(goal, paths, intelligence=intel, **kwargs)

    return make


@pytest.fixture
def outcomes(intel: Intelligence) -> Callable[[str], list[OutcomeRecord]]:
    def stored(goal: str) -> list[OutcomeRecord]:
        intel.flush()  # routers report through the background writer
        return intel.store.outcomes_in_window(intel.tenant, goal, 0)

    return stored


def _wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(bytes(range(256)) * 40)
    return buffer.getvalue()


def _png() -> bytes:
    image = Image.new("RGB", (16, 16))
    image.putdata([(x * 16, y * 16, 128) for y in range(16) for x in range(16)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# task -> (input_data, kwargs, native type check, check of the callbacks' output)
CASES: dict[str, tuple[Any, dict[str, Any], Callable[[Any], bool], Callable[[str], bool]]] = {
    "chat_completion": (
        "What is 17 + 25?",
        {},
        lambda r: isinstance(r, hf_types.ChatCompletionOutput),
        lambda out: out == "42",
    ),
    "text_generation": (
        "Tell me about the harbour",
        {"max_new_tokens": 20},
        lambda r: isinstance(r, str),
        lambda out: "harbour" in out,
    ),
    "summarization": (
        "Stripe raised prices today. Analysts were surprised by the move.",
        {},
        lambda r: isinstance(r, hf_types.SummarizationOutput),
        lambda out: out == "Stripe raised prices today.",
    ),
    "translation": (
        "hello world",
        {"src_lang": "en", "tgt_lang": "fr"},
        lambda r: isinstance(r, hf_types.TranslationOutput),
        lambda out: out == "bonjour monde",
    ),
    "fill_mask": (
        "Paris is the [MASK] of France.",
        {},
        lambda r: isinstance(r[0], hf_types.FillMaskOutputElement),
        lambda out: "sequence" in json.loads(out)[0],
    ),
    "table_question_answering": (
        {"table": {"Repository": ["kalibr", "other"], "Stars": ["42", "7"]}, "query": "Stars?"},
        {},
        lambda r: isinstance(r, hf_types.TableQuestionAnsweringOutputElement),
        lambda out: out in {"42", "7"},
    ),
    "automatic_speech_recognition": (
        _wav(),
        {},
        lambda r: isinstance(r, hf_types.AutomaticSpeechRecognitionOutput),
        lambda out: bool(out.strip()),
    ),
    "text_to_speech": (
        "Good morning",
        {},
        lambda r: isinstance(r, bytes) and r[:4] == b"RIFF",
        lambda out: json.loads(out)["format"] == "wav" and json.loads(out)["bytes"] > 44,
    ),
    "audio_classification": (
        _wav(),
        {"top_k": 2},
        lambda r: isinstance(r[0], hf_types.AudioClassificationOutputElement) and len(r) == 2,
        lambda out: set(json.loads(out)[0]) == {"label", "score"},
    ),
    "text_to_image": (
        "a red bicycle",
        {"width": 24, "height": 16},
        lambda r: isinstance(r, Image.Image) and r.size == (24, 16),
        lambda out: json.loads(out) == {"width": 24, "height": 16, "mode": "RGB"},
    ),
    "image_to_text": (
        _png(),
        {},
        lambda r: isinstance(r, hf_types.ImageToTextOutput),
        lambda out: out.startswith("an image of"),
    ),
    "image_classification": (
        _png(),
        {"top_k": 3},
        lambda r: isinstance(r[0], hf_types.ImageClassificationOutputElement) and len(r) == 3,
        lambda out: len(json.loads(out)) == 3,
    ),
    "image_segmentation": (
        _png(),
        {},
        lambda r: isinstance(r[0].mask, Image.Image),
        lambda out: json.loads(out)[0]["mask"] == {"width": 16, "height": 16},
    ),
    "object_detection": (
        _png(),
        {},
        lambda r: isinstance(r[0], hf_types.ObjectDetectionOutputElement),
        lambda out: set(json.loads(out)[0]["box"]) == {"xmin", "ymin", "xmax", "ymax"},
    ),
    "feature_extraction": (
        "search query text",
        {},
        lambda r: isinstance(r, np.ndarray) and r.shape == (1, 256),
        lambda out: len(json.loads(out)[0]) == 256,
    ),
    "text_classification": (
        "I love this product, it is amazing!",
        {},
        lambda r: isinstance(r[0], hf_types.TextClassificationOutputElement),
        lambda out: json.loads(out)[0]["label"] == "positive",
    ),
    "token_classification": (
        "Hi, I'm Sarah from Stripe in Paris.",
        {},
        lambda r: isinstance(r[0], hf_types.TokenClassificationOutputElement),
        lambda out: {"word": "Stripe", "entity_group": "ORG"}.items() <= json.loads(out)[1].items(),
    ),
}


# -- execute ----------------------------------------------------------------------------------


def test_hf_tasks_are_the_17_of_the_spec() -> None:
    assert SPEC_TASKS == HF_TASKS
    assert {t.replace("_", "-") for t in HF_TASKS} == {"chat-completion", *SIM_HF_TASKS}
    assert set(CASES) == set(HF_TASKS)


@pytest.mark.parametrize("task", HF_TASKS)
def test_execute_returns_the_native_result_and_records_an_outcome(
    task: str, sim: ProviderSimulator, make_router: Callable[..., Router], outcomes: Any
) -> None:
    input_data, kwargs, is_native, output_ok = CASES[task]
    model = f"org/{task.replace('_', '-')}"
    seen: list[str] = []

    def success_when(output: str) -> bool:
        seen.append(output)
        return output_ok(output)

    router = make_router(f"exec_{task}", [model], success_when=success_when)
    result = router.execute(task, input_data, **kwargs)

    assert is_native(result), type(result)
    assert len(seen) == 1, "success_when sees every call once"
    [outcome] = outcomes(f"exec_{task}")
    assert outcome.success, f"{task}: success_when got {seen[0][:200]!r}"
    assert outcome.model_id == model
    assert outcome.latency_ms is not None and outcome.latency_ms > 0
    assert outcome.metadata is not None and outcome.metadata["provider"] == "huggingface"
    assert sim.stats()[model].routes == {f"hf.{task.replace('_', '-')}": 1}


def test_round_trips_through_real_content(
    sim: ProviderSimulator, make_router: Callable[..., Router]
) -> None:
    router = make_router("round_trip", ["org/round-trip"])
    speech = router.execute("text_to_speech", "see you at noon")
    assert router.execute("automatic_speech_recognition", speech).text == "see you at noon"
    image = router.execute("text-to-image", "a lighthouse at dusk")  # dashes accepted
    assert router.execute("image_to_text", image).generated_text == (
        "an image of a lighthouse at dusk"
    ), "a PIL image is accepted as input"


def test_success_when_and_score_when_drive_the_outcomes(
    sim: ProviderSimulator, make_router: Callable[..., Router], outcomes: Any
) -> None:
    sim.set_script("org/right", ModelScript(accuracy=1.0))
    sim.set_script("org/wrong", ModelScript(accuracy=0.0))

    def is_bonjour(out: str) -> bool:
        return out == "bonjour"

    router = make_router("translate_hello", ["org/right", "org/wrong"], success_when=is_bonjour)
    for model in ("org/right", "org/wrong"):
        router.execute("translation", "hello", force_model=model, src_lang="en", tgt_lang="fr")
    right, wrong = outcomes("translate_hello")
    assert (right.model_id, right.success) == ("org/right", True)
    assert (wrong.model_id, wrong.success, wrong.failure_category) == (
        "org/wrong",
        False,
        "validation_failed",
    )

    def top_score(out: str) -> float:
        best = json.loads(out)[0]
        return best["score"] if best["label"] == "positive" else 0.0

    scored = make_router("sentiment", ["org/right"], score_when=top_score)
    scored.execute("text_classification", "What a great, wonderful day")
    [outcome] = outcomes("sentiment")
    assert outcome.success and outcome.score == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("task", "input_data"),
    [
        ("summarization", "One sentence. Another one."),
        ("text_classification", "fine"),
        ("feature_extraction", "query"),
        ("text_to_image", "a cat"),
    ],
)
def test_empty_results_are_reported_as_empty_response(
    task: str,
    input_data: str,
    sim: ProviderSimulator,
    make_router: Callable[..., Router],
    outcomes: Any,
) -> None:
    model = f"org/empty-{task.replace('_', '-')}"
    sim.set_script(model, ModelScript(empty=1.0))
    seen: list[str] = []
    router = make_router(
        f"empty_{task}", [model], success_when=lambda out: seen.append(out) or bool(out)
    )
    router.execute(task, input_data)  # an empty answer is returned, not raised
    [outcome] = outcomes(f"empty_{task}")
    assert seen == [""]
    assert not outcome.success and outcome.failure_category == "empty_response"

    silent = make_router(f"empty_silent_{task}", [model])  # no callbacks: still reported
    silent.execute(task, input_data)
    assert outcomes(f"empty_silent_{task}")[0].failure_category == "empty_response"


def test_a_degrading_hf_model_loses_traffic(
    sim: ProviderSimulator, make_router: Callable[..., Router], outcomes: Any
) -> None:
    sim.set_script("org/fading", ModelScript(accuracy=Schedule.step(at=12, before=1.0, after=0.0)))
    sim.set_script("org/steady", ModelScript(accuracy=0.85))
    router = make_router(
        "translate_daily",
        ["org/fading", "org/steady"],
        success_when=lambda out: out == "bonjour le matin",
    )
    chosen = [
        router.execute("translation", "hello the morning", src_lang="en", tgt_lang="fr")
        for _ in range(120)
    ]
    assert len(chosen) == 120
    late = [o.model_id for o in outcomes("translate_daily")[-40:]]
    assert late.count("org/fading") <= 8, late
    assert sim.request_count("org/fading") + sim.request_count("org/steady") == 120


def test_path_params_pricing_and_base_url_hints(
    sim: ProviderSimulator,
    make_router: Callable[..., Router],
    outcomes: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HF_BASE_URL")
    path = {
        "model": "org/priced",
        "params": {"tgt_lang": "de", "src_lang": "en", "temperature": 0.3},
        "base_url": sim.hf_base_url,
        "pricing": {"cost_per_call": 0.002},
    }
    router = make_router("priced", [path], success_when=lambda out: out == "Hallo Welt")
    result = router.execute("translation", "Hello world")
    assert result.translation_text == "Hallo Welt"  # path params used; temperature ignored
    [outcome] = outcomes("priced")
    assert outcome.success and outcome.cost_usd == pytest.approx(0.002)


# -- synthesize / transcribe -----------------------------------------------------------------


def test_synthesize_returns_audio_with_its_cost_and_outcome(
    sim: ProviderSimulator, make_router: Callable[..., Router], outcomes: Any
) -> None:
    text = "Your meeting with Stripe is at noon."
    seen: list[str] = []
    router = make_router("narrate", ["tts-1"], success_when=lambda out: not seen.append(out))
    result = router.synthesize(text, voice="nova")

    assert isinstance(result, SpeechResult)
    assert result.audio[:3] == b"ID3" and result.format == "mp3"
    assert result.model == "tts-1"
    assert result.cost_usd == pytest.approx(len(text) * 15.0 / 1e6)
    assert result.latency_ms > 0
    rendered = {"format": "mp3", "bytes": len(result.audio), "characters": len(text)}
    assert json.loads(seen[0]) == rendered
    [outcome] = outcomes("narrate")
    assert outcome.success and outcome.trace_id == result.kalibr_trace_id
    assert outcome.cost_usd == pytest.approx(result.cost_usd)
    assert outcome.metadata is not None and outcome.metadata["provider"] == "openai"

    wav = router.synthesize("Hello", response_format="wav")
    assert wav.format == "wav" and wav.audio[:4] == b"RIFF"


def test_transcribing_synthesized_speech_gives_back_the_text(
    sim: ProviderSimulator,
    make_router: Callable[..., Router],
    outcomes: Any,
    tmp_path: Any,
) -> None:
    text = "Please send the invoice to Shopify by Friday."
    speech = make_router("speak", ["gpt-4o-mini-tts"]).synthesize(text)
    router = make_router("transcribe_call", ["whisper-1"], success_when=lambda out: out == text)

    result = router.transcribe(speech.audio, audio_duration_seconds=120.0)
    assert isinstance(result, TranscriptionResult)
    assert result.text == text
    assert result.cost_usd == pytest.approx(0.006 * 2)  # whisper-1: $0.006 per minute
    [outcome] = outcomes("transcribe_call")
    assert outcome.success and outcome.cost_usd == pytest.approx(0.012)
    assert outcome.latency_ms is not None and outcome.latency_ms > 0

    path = tmp_path / "speech.mp3"
    path.write_bytes(speech.audio)
    from_file = router.transcribe(path)  # no duration given: the provider's reported one
    assert from_file.text == text
    assert 0 < from_file.cost_usd < 0.001


def test_hf_models_serve_synthesize_and_transcribe(
    sim: ProviderSimulator, make_router: Callable[..., Router]
) -> None:
    speech = make_router("hf_tts", ["facebook/mms-tts-eng"]).synthesize("good morning")
    assert speech.format == "wav"
    text = make_router("hf_asr", [{"model": "openai/whisper-large-v3", "provider": "huggingface"}])
    assert text.transcribe(speech.audio).text == "good morning"
    assert sim.stats()["openai/whisper-large-v3"].routes == {"hf.automatic-speech-recognition": 1}


# -- errors -----------------------------------------------------------------------------------


def test_hf_provider_errors_are_reported_and_reraised(
    sim: ProviderSimulator, make_router: Callable[..., Router], outcomes: Any
) -> None:
    sim.set_script("org/limited", ModelScript(rate_limit=1.0))
    sim.set_script("org/broken", ModelScript(server_error=1.0))
    router = make_router("hf_errors", ["org/limited", "org/broken"])

    with pytest.raises(RateLimitedError) as limited:
        router.execute("summarization", "Some text.", force_model="org/limited")
    assert isinstance(limited.value.__cause__, hf_errors.HfHubHTTPError)
    assert limited.value.model_id == "org/limited" and limited.value.goal == "hf_errors"
    with pytest.raises(ProviderError) as broken:
        router.execute("text_classification", "text", force_model="org/broken")
    assert type(broken.value) is ProviderError
    assert isinstance(broken.value.__cause__, hf_errors.HfHubHTTPError)

    first, second = outcomes("hf_errors")
    assert (first.success, first.failure_category) == (False, "rate_limited")
    assert (second.success, second.failure_category) == (False, "provider_error")
    assert first.latency_ms is not None and first.trace_id == limited.value.trace_id


def test_audio_provider_errors_are_reported_and_reraised(
    sim: ProviderSimulator, make_router: Callable[..., Router], outcomes: Any
) -> None:
    sim.set_script("tts-1-hd", ModelScript(rate_limit=1.0))
    sim.set_script("gpt-4o-transcribe", ModelScript(server_error=1.0))
    with pytest.raises(RateLimitedError) as limited:
        make_router("speak_errors", ["tts-1-hd"]).synthesize("Hello there")
    assert isinstance(limited.value.__cause__, openai.RateLimitError)
    with pytest.raises(ProviderError) as broken:
        make_router("listen_errors", ["gpt-4o-transcribe"]).transcribe(_wav())
    assert isinstance(broken.value.__cause__, openai.InternalServerError)
    assert outcomes("speak_errors")[0].failure_category == "rate_limited"
    assert outcomes("listen_errors")[0].failure_category == "provider_error"


def test_invalid_calls_raise_before_routing(
    sim: ProviderSimulator, make_router: Callable[..., Router], outcomes: Any
) -> None:
    router = make_router("invalid", ["org/never-called", "tts-1"])
    with pytest.raises(ValidationError) as unknown:
        router.execute("image_generation", "a cat")
    assert all(task in str(unknown.value) for task in HF_TASKS)
    with pytest.raises(ValidationError, match="non-empty string"):
        router.execute("summarization", 42)
    with pytest.raises(ValidationError, match="feature_extraction"):
        router.execute("feature_extraction", ["ok", ""])
    with pytest.raises(ValidationError, match="table"):
        router.execute("table_question_answering", "how many?")
    with pytest.raises(ValidationError, match="no file"):
        router.execute("image_classification", "/nonexistent/cat.png")
    with pytest.raises(ValidationError, match="bytes, a file path or URL"):
        router.execute("audio_classification", 3.5)
    with pytest.raises(ValidationError, match="does not take max_tokens"):
        router.execute("summarization", "text", max_tokens=5)
    with pytest.raises(ValidationError, match="does not stream"):
        router.execute("text_generation", "text", stream=True)
    with pytest.raises(ValidationError, match="text"):
        router.synthesize("   ")
    with pytest.raises(ValidationError, match="audio must be bytes or a file path"):
        router.transcribe(12345)
    with pytest.raises(ValidationError, match="empty"):
        router.transcribe(b"")
    with pytest.raises(ValidationError, match="audio_duration_seconds"):
        router.transcribe(_wav(), audio_duration_seconds=-1)
    assert outcomes("invalid") == []
    assert sim.request_count("org/never-called") == 0


def test_execute_refuses_paths_that_are_not_huggingface_models(
    sim: ProviderSimulator, make_router: Callable[..., Router]
) -> None:
    router = make_router("mixed", ["org/summarizer", {"model": "gpt-4o", "provider": "openai"}])
    with pytest.raises(ConfigurationError, match="HuggingFace"):
        router.execute("summarization", "Some text.")


@pytest.mark.skipif(
    importlib.util.find_spec("elevenlabs") is not None
    or importlib.util.find_spec("deepgram") is not None,
    reason="checks the error shown when the kalibr-core[voice] SDKs are not installed",
)
def test_voice_paths_without_their_sdk_name_the_extra(
    sim: ProviderSimulator, make_router: Callable[..., Router]
) -> None:
    with pytest.raises(ConfigurationError, match=r"kalibr-core\[voice\]"):
        make_router("voices", ["tts-1", "eleven_multilingual_v2"]).synthesize("Hi")
    with pytest.raises(ConfigurationError, match=r"kalibr-core\[voice\]"):
        make_router("ears", ["whisper-1", "nova-2"]).transcribe(_wav())


def _fake_voice_sdks(monkeypatch: pytest.MonkeyPatch, calls: list[tuple[str, Any]]) -> None:
    """Stand-ins for the elevenlabs / deepgram-sdk surfaces kalibr calls (no simulator route)."""

    def module(name: str, **attrs: Any) -> types.ModuleType:
        fake = types.ModuleType(name)
        fake.__spec__ = importlib.machinery.ModuleSpec(name, None)
        fake.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, fake)
        return fake

    class ElevenLabs:
        def __init__(self, api_key: str) -> None:
            def convert(**kwargs: Any) -> Iterator[bytes]:
                calls.append(("elevenlabs.convert", kwargs))
                yield from (b"ID3\x03\x00", bytes(64))

            self.text_to_speech = types.SimpleNamespace(convert=convert)

    class DeepgramClient:
        def __init__(self, api_key: str) -> None:
            def transcribe_file(**kwargs: Any) -> Any:
                calls.append(("deepgram.transcribe_file", kwargs))
                alternative = types.SimpleNamespace(transcript="hello from deepgram")
                channel = types.SimpleNamespace(alternatives=[alternative])
                return types.SimpleNamespace(
                    results=types.SimpleNamespace(channels=[channel]),
                    metadata=types.SimpleNamespace(duration=60.0),
                )

            def generate(**kwargs: Any) -> Iterator[bytes]:
                calls.append(("deepgram.generate", kwargs))
                yield from (b"RIFF", bytes(4), b"WAVE", bytes(32))

            media = types.SimpleNamespace(transcribe_file=transcribe_file)
            self.listen = types.SimpleNamespace(v1=types.SimpleNamespace(media=media))
            audio = types.SimpleNamespace(generate=generate)
            self.speak = types.SimpleNamespace(v1=types.SimpleNamespace(audio=audio))

    module("elevenlabs")
    module("elevenlabs.client", ElevenLabs=ElevenLabs)
    module("deepgram", DeepgramClient=DeepgramClient)


def test_elevenlabs_and_deepgram_plumbing_with_faked_sdks(
    make_router: Callable[..., Router], outcomes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Any]] = []
    _fake_voice_sdks(monkeypatch, calls)
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    voice_path = {"model": "eleven_multilingual_v2", "params": {"voice": "JBFqnCBsd6RMkjVDRZzb"}}
    narrate = make_router("narrate_eleven", [voice_path])
    with pytest.raises(ConfigurationError, match="ELEVENLABS_API_KEY"):
        narrate.synthesize("Hello")
    assert outcomes("narrate_eleven")[0].failure_category == "auth_error"

    monkeypatch.setenv("ELEVENLABS_API_KEY", "fake")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "fake")
    speech = narrate.synthesize("Hello there", voice="ignored: the path's voice wins")
    assert speech.format == "mp3" and speech.audio.startswith(b"ID3")
    assert speech.cost_usd == pytest.approx(11 * 180.0 / 1e6)
    aura = make_router("narrate_aura", ["aura-asteria-en"]).synthesize("Hi")
    assert aura.format == "wav"
    heard = make_router("listen_nova", ["nova-2"], success_when=bool).transcribe(_wav())
    assert heard.text == "hello from deepgram"
    assert heard.cost_usd == pytest.approx(0.0043)  # the 60 s Deepgram reports, at $/minute

    assert calls[0] == (
        "elevenlabs.convert",
        {
            "voice_id": "JBFqnCBsd6RMkjVDRZzb",
            "model_id": "eleven_multilingual_v2",
            "text": "Hello there",
            "output_format": "mp3_44100_128",
        },
    )
    assert calls[1] == ("deepgram.generate", {"text": "Hi", "model": "aura-asteria-en"})
    assert calls[2][0] == "deepgram.transcribe_file" and calls[2][1]["model"] == "nova-2"
    assert outcomes("listen_nova")[0].success
    with pytest.raises(ConfigurationError, match="do not transcribe"):
        make_router("listen_eleven", ["eleven_turbo_v2"]).transcribe(_wav())


def test_audio_provider_detection() -> None:
    from kalibr_core import normalise_path

    expected = {
        "tts-1": "openai",
        "gpt-4o-mini-tts": "openai",
        "whisper-1": "openai",
        "gpt-4o-mini-transcribe": "openai",
        "eleven_multilingual_v2": "elevenlabs",
        "nova-2": "deepgram",
        "aura-asteria-en": "deepgram",
        "enhanced": "deepgram",
        "base": "deepgram",
        "deepgram/nova-3": "deepgram",
        "facebook/mms-tts-eng": "huggingface",
        "openai/whisper-1": "openai",
    }
    for model, provider in expected.items():
        assert audio_provider(normalise_path("g", model)) == provider, model


# -- async --------------------------------------------------------------------------------------


def test_async_forms(
    sim: ProviderSimulator, make_router: Callable[..., Router], outcomes: Any
) -> None:
    sim.set_script("org/async-limited", ModelScript(rate_limit=1.0))

    async def main() -> tuple[Any, SpeechResult, TranscriptionResult]:
        router = make_router(
            "async_modalities", ["org/async-model", "tts-1", "whisper-1"], success_when=bool
        )
        summary = await router.aexecute(
            "summarization", "Async works. Really.", force_model="org/async-model"
        )
        speech = await router.asynthesize("Async speech", force_model="tts-1")
        heard = await router.atranscribe(speech.audio, force_model="whisper-1")
        with pytest.raises(RateLimitedError):
            await router.aexecute("summarization", "x", force_model="org/async-limited")
        return summary, speech, heard

    summary, speech, heard = asyncio.run(main())
    assert summary.summary_text == "Async works."
    assert speech.audio and heard.text == "Async speech"
    stored = outcomes("async_modalities")
    assert [o.success for o in stored] == [True, True, True, False]
    assert stored[-1].failure_category == "rate_limited"

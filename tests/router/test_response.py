"""What a completion returns, and what its stored outcome holds (and never holds)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from kalibr_core import ContextExceededError, Intelligence
from kalibr_core.router import ChatCompletion, Choice, Message, Router, Usage
from kalibr_core.simulator import (
    ModelScript,
    ProviderSimulator,
    check_answer,
    company_extraction_examples,
)

pytestmark = pytest.mark.simulator

EXAMPLE = company_extraction_examples()[0]  # "Hi, I'm Sarah from Stripe." -> Stripe


def extracts(output: str) -> bool:
    return check_answer(EXAMPLE.prompt, output)


@pytest.mark.parametrize(
    ("model", "prices"),
    [("gpt-4o", (2.50, 10.00)), ("claude-sonnet-4-6", (3.00, 15.00))],
)
def test_a_completion_is_openai_shaped_with_trace_cost_and_latency(
    sim_env: ProviderSimulator,
    make_router: Any,
    stored: Any,
    model: str,
    prices: tuple[float, float],
) -> None:
    router = make_router("response_shape", [model], success_when=extracts)

    response = router.completion([{"role": "user", "content": EXAMPLE.prompt}], max_tokens=100)

    message = response.choices[0].message
    assert message.role == "assistant"
    assert json.loads(message.content) == {"company": "Stripe"}
    assert response.content == message.content
    assert response.model == model
    assert re.fullmatch(r"[0-9a-f]{32}", response.kalibr_trace_id)
    usage = response.usage
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    expected_cost = (usage.prompt_tokens * prices[0] + usage.completion_tokens * prices[1]) / 1e6
    assert response.kalibr_cost_usd == pytest.approx(expected_cost)
    assert response.kalibr_latency_ms > 0

    [outcome] = stored("response_shape")
    assert outcome.trace_id == response.kalibr_trace_id
    assert outcome.success is True
    assert outcome.model_id == model
    assert outcome.path_id == response.kalibr_path_id == router.paths[0].path_id
    assert outcome.cost_usd == pytest.approx(response.kalibr_cost_usd)
    assert outcome.latency_ms == pytest.approx(response.kalibr_latency_ms, abs=1e-3)
    assert (outcome.input_tokens, outcome.output_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert outcome.metadata is not None
    assert outcome.metadata["provider"] == response.kalibr_provider


def test_a_completion_is_a_complete_pydantic_model(
    sim_env: ProviderSimulator, make_router: Any
) -> None:
    """Built without validation (trusted values), it must still behave as a validated model."""
    router = make_router("response_model", ["gpt-4o"], success_when=bool)

    response = router.completion([{"role": "user", "content": "What is 6 * 7?"}], max_tokens=20)

    assert isinstance(response, ChatCompletion)
    assert response.model_fields_set == set(ChatCompletion.model_fields)
    assert response.choices[0].model_fields_set == set(Choice.model_fields)
    assert response.choices[0].message.model_fields_set == set(Message.model_fields)
    assert response.usage.model_fields_set == set(Usage.model_fields)
    assert response.model_extra == {}
    assert ChatCompletion.model_validate(response.model_dump()) == response
    assert ChatCompletion.model_validate_json(response.model_dump_json()) == response
    fields = {name: getattr(response, name) for name in ChatCompletion.model_fields}
    assert ChatCompletion.model_construct(**fields) == response
    changed = response.model_copy(update={"id": "other"})
    assert (changed.id, response.id == "other") == ("other", False)


def test_latency_is_the_measured_provider_time(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    sim_env.set_script("gpt-4o-slow", ModelScript(latency_ms=120))
    router = make_router("latency", ["gpt-4o-slow"], success_when=bool)

    response = router.completion([{"role": "user", "content": "What is 6 * 7?"}])

    assert response.kalibr_latency_ms >= 120
    [outcome] = stored("latency")
    assert outcome.latency_ms is not None
    assert outcome.latency_ms >= 120


def test_unpriced_models_cost_nothing_unless_the_path_gives_a_price(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    router = make_router(
        "pricing",
        [
            "ollama/llama3",
            {"model": "ollama/qwen2", "pricing": {"input_per_1m": 1.0, "output_per_1m": 2.0}},
            {"model": "ollama/phi3", "pricing": {"cost_per_call": 0.25}},
        ],
        success_when=bool,
    )
    messages = [{"role": "user", "content": "What is 6 * 7?"}]

    free = router.completion(messages, force_model="ollama/llama3")
    priced = router.completion(messages, force_model="ollama/qwen2")
    flat = router.completion(messages, force_model="ollama/phi3")

    assert free.kalibr_cost_usd == 0.0
    usage = priced.usage
    assert priced.kalibr_cost_usd == pytest.approx(
        (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6
    )
    assert flat.kalibr_cost_usd == 0.25
    costs = {o.model_id: o.cost_usd for o in stored("pricing")}
    assert costs == {
        "ollama/llama3": 0.0,
        "ollama/qwen2": pytest.approx(priced.kalibr_cost_usd),
        "ollama/phi3": 0.25,
    }


def test_no_prompt_or_completion_text_is_ever_stored(
    sim_env: ProviderSimulator, tmp_path: Path
) -> None:
    """Outcomes keep numbers and categories; the conversation stays with the caller."""
    sim_env.set_script("gpt-4o-wrong", ModelScript(accuracy=0.0))
    database = tmp_path / "kalibr.db"
    intel = Intelligence(str(database), seed=1)
    messages = [
        {"role": "system", "content": "Extract company names; Zanzibar protocol."},
        {"role": "user", "content": EXAMPLE.prompt},
    ]
    try:
        right = Router("privacy", ["gpt-4o"], success_when=extracts, intelligence=intel)
        wrong = Router("privacy", ["gpt-4o-wrong"], success_when=extracts, intelligence=intel)
        scored = Router("privacy", ["gpt-4o"], score_when=lambda _: 0.1, intelligence=intel)
        manual = Router("privacy", ["claude-sonnet-4-6"], intelligence=intel)
        tight = Router("privacy", ["gpt-4o-ctx12"], intelligence=intel)
        streamed = Router(
            "privacy", ["claude-haiku-4-5"], success_when=extracts, intelligence=intel
        )

        answers = [right.completion(messages), wrong.completion(messages)]
        answers.append(scored.completion(messages))
        answers.append(manual.completion(messages))
        manual.report(success=False, failure_category="user_unsatisfied")
        with pytest.raises(ContextExceededError):
            tight.completion(messages)
        list(streamed.completion(messages, stream=True))

        intel.flush()
        records = intel.store.outcomes_in_window(intel.tenant, "privacy", 0)
        assert len(records) == 6
        dumped = json.dumps([dataclasses.asdict(r) for r in records], default=str)
    finally:
        intel.close()

    secrets = ["Sarah", "Stripe", "Zanzibar", "company name"]
    secrets += [a.choices[0].message.content for a in answers]
    for secret in secrets:
        assert secret not in dumped
    files = [p for p in tmp_path.iterdir() if p.name.startswith("kalibr.db")]
    assert files
    raw = b"".join(p.read_bytes() for p in files)
    for secret in ("Sarah", "Stripe", "Zanzibar"):
        assert secret.encode() not in raw

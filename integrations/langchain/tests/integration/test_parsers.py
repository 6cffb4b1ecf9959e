"""with_outcome and with_structured_output: the parser's verdict is the routed call's outcome."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from kalibr_core.simulator import (
    ModelScript,
    ProviderSimulator,
    check_answer,
    company_extraction_examples,
)
from langchain_core.exceptions import OutputParserException
from langchain_core.output_parsers import JsonOutputParser, StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel, Field

from langchain_kalibr import with_outcome

pytestmark = pytest.mark.simulator

GPT, CLAUDE = "gpt-4o-mini", "claude-haiku-4-5"
EXAMPLES = company_extraction_examples()
PROMPT = ChatPromptTemplate.from_template("{text}")
STORY = "Tell me about the history of the harbour and its lighthouse keepers"


class Company(BaseModel):
    """The company a sentence mentions."""

    company: str = Field(description="the company's name")


class Ticker(BaseModel):
    """A stock ticker: four capital letters."""

    ticker: str = Field(pattern=r"^[A-Z]{4}$")


def test_a_parse_that_passes_is_a_success(make_llm: Any, stored: Any) -> None:
    llm = make_llm("parse_ok", [GPT, CLAUDE])
    pipeline = PROMPT | llm | with_outcome(JsonOutputParser())

    parsed = pipeline.invoke({"text": EXAMPLES[0].prompt})

    assert parsed == {"company": EXAMPLES[0].company}
    [outcome] = stored("parse_ok")
    assert outcome.success


def test_an_answer_the_parser_cannot_read_is_malformed_output(make_llm: Any, stored: Any) -> None:
    llm = make_llm("parse_fails", [GPT])
    pipeline = PROMPT | llm | with_outcome(JsonOutputParser())

    with pytest.raises(OutputParserException):
        pipeline.invoke({"text": STORY})

    [outcome] = stored("parse_fails")
    assert (outcome.success, outcome.failure_category) == (False, "malformed_output")


def test_a_validator_that_rejects_the_answer_is_validation_failed(
    make_llm: Any, stored: Any
) -> None:
    llm = make_llm("validated", [GPT, CLAUDE])
    pipeline = PROMPT | llm | with_outcome(JsonOutputParser(), lambda out: out == {"n": 1})

    with pytest.raises(OutputParserException, match="validator rejected"):
        pipeline.invoke({"text": EXAMPLES[0].prompt})

    [outcome] = stored("validated")
    assert (outcome.success, outcome.failure_category) == (False, "validation_failed")


def test_a_validator_that_raises_rejects_the_answer_too(make_llm: Any, stored: Any) -> None:
    def must_be_acme(out: dict[str, str]) -> bool:
        raise KeyError("acme")

    llm = make_llm("validator_raises", [GPT])
    pipeline = PROMPT | llm | with_outcome(JsonOutputParser(), must_be_acme)

    with pytest.raises(OutputParserException) as caught:
        pipeline.invoke({"text": EXAMPLES[0].prompt})

    assert isinstance(caught.value.__cause__, KeyError)
    [outcome] = stored("validator_raises")
    assert "KeyError" in (outcome.failure_reason or "")


def test_a_streamed_parse_streams_and_is_judged_when_the_stream_ends(
    make_llm: Any, stored: Any
) -> None:
    llm = make_llm("streamed_parse", [GPT, CLAUDE])
    pipeline = PROMPT | llm | with_outcome(StrOutputParser(), lambda text: "Stripe" in text)

    pieces = list(pipeline.stream({"text": EXAMPLES[0].prompt}))

    assert len(pieces) > 1  # the wrapped parser still streams
    assert json.loads("".join(pieces)) == {"company": "Stripe"}
    [outcome] = stored("streamed_parse")
    assert outcome.success


def test_an_async_streamed_parse_is_judged_too(make_llm: Any, stored: Any) -> None:
    llm = make_llm("astreamed_parse", [GPT, CLAUDE])
    pipeline = PROMPT | llm | with_outcome(JsonOutputParser())

    async def run() -> list[Any]:
        return [piece async for piece in pipeline.astream({"text": STORY})]

    with pytest.raises(OutputParserException):
        asyncio.run(run())

    [outcome] = stored("astreamed_parse")
    assert outcome.failure_category == "malformed_output"


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_structured_output_reports_each_call(
    make_llm: Any, stored: Any, method: str, model: str
) -> None:
    goal = f"structured_{method}_{model[:3]}"
    llm = make_llm(goal, [model]).with_structured_output(Company, method=method)

    company = llm.invoke(EXAMPLES[0].prompt)

    assert company == Company(company=EXAMPLES[0].company)
    [outcome] = stored(goal)
    assert outcome.success


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_structured_output_that_breaks_the_schema_is_validation_failed(
    make_llm: Any, stored: Any, method: str
) -> None:
    llm = make_llm("schema_" + method, [GPT, CLAUDE])
    structured = llm.with_structured_output(Ticker, method=method, include_raw=True)

    result = structured.invoke("Which ticker does the harbour company trade under?")

    assert result["parsed"] is None
    assert result["parsing_error"] is not None
    [outcome] = stored("schema_" + method)
    assert (outcome.trace_id, outcome.success, outcome.failure_category) == (
        result["raw"].response_metadata["kalibr_trace_id"],
        False,
        "validation_failed",
    )


def test_json_mode_on_an_openai_path(make_llm: Any, stored: Any) -> None:
    llm = make_llm("json_mode", [GPT]).with_structured_output(Company, method="json_mode")

    company = llm.invoke(EXAMPLES[1].prompt + " Answer in JSON.")

    assert company == Company(company=EXAMPLES[1].company)
    assert stored("json_mode")[0].success


def test_routing_learns_from_the_parser_alone(
    sim: ProviderSimulator, make_llm: Any, stored: Any
) -> None:
    """No success_when, no report(): the validator's verdicts move traffic to the right model."""
    sim.set_script("gpt-4o-careless", ModelScript(accuracy=0.0))
    sim.set_script("claude-haiku-4-5-careful", ModelScript(accuracy=1.0))
    llm = make_llm("learns", ["gpt-4o-careless", "claude-haiku-4-5-careful"])
    current = {"prompt": ""}
    parser = with_outcome(StrOutputParser(), lambda answer: check_answer(current["prompt"], answer))
    pipeline = PROMPT | llm | parser
    # The first call goes to the careless model (forced, and still reported): after a streak
    # of successes on the careful one, Thompson sampling may not try the other within 60
    # calls (about 1 run in 61 seeds), and there would then be no verdict to learn from.
    forced = PROMPT | llm.bind(model="gpt-4o-careless") | parser

    for i in range(60):
        current["prompt"] = EXAMPLES[i % len(EXAMPLES)].prompt
        with contextlib.suppress(OutputParserException):  # rejected: reported, and raised
            (forced if i == 0 else pipeline).invoke({"text": current["prompt"]})

    outcomes = stored("learns")
    assert len(outcomes) == 60
    careless = [o for o in outcomes if o.model_id == "gpt-4o-careless"]
    assert careless
    assert all(o.failure_category == "validation_failed" for o in careless)
    assert sum(o.model_id == "gpt-4o-careless" for o in outcomes[-20:]) <= 3

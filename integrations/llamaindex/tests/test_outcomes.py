"""Outcomes from LlamaIndex's instrumentation (KalibrEventHandler) and from evaluators."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kalibr_core import NotFoundError
from kalibr_core.simulator import ModelScript, ProviderSimulator, company_extraction_examples
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.base.response.schema import Response
from llama_index.core.evaluation import EvaluationResult
from llama_index.core.llms import LLM, MockLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.schema import QueryBundle
from pydantic import BaseModel, field_validator

from llama_index.llms.kalibr import KalibrEventHandler, score_from_evaluation

EXAMPLE = company_extraction_examples()[0]  # "Hi, I'm Sarah from Stripe."
PROMPT = PromptTemplate("Extract the company from this message: {message}")
SIMULATOR = pytest.mark.simulator


class Company(BaseModel):
    """The company a message names."""

    company: str

    @field_validator("company")
    @classmethod
    def named_in_the_message(cls, value: str) -> str:
        if value not in EXAMPLE.sentence:
            raise ValueError(f"{value} is not named in the message")
        return value


class AskEngine(BaseQueryEngine):
    """A query engine that asks its LLM the query, and fails on request after the answer.

    A BaseQueryEngine (as every built-in engine is): its ``query`` dispatches the query events.
    """

    def __init__(self, llm: LLM, fail: bool = False) -> None:
        super().__init__(callback_manager=None)
        self._llm = llm
        self._fail = fail

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    def _query(self, query_bundle: QueryBundle) -> Response:
        answer = self._llm.chat([ChatMessage(content=query_bundle.query_str)]).message.content
        if self._fail:
            raise RuntimeError("the post-processing step failed")
        return Response(answer)

    async def _aquery(self, query_bundle: QueryBundle) -> Response:
        return self._query(query_bundle)


# -- score_from_evaluation ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("result", "scale", "score"),
    [
        (EvaluationResult(passing=True, score=1.0), (0, 1), 1.0),
        (EvaluationResult(passing=False, score=0.0), (0, 1), 0.0),
        (EvaluationResult(score=0.7), (0, 1), 0.7),
        (EvaluationResult(passing=True, score=4.0), (1, 5), 0.75),
        (EvaluationResult(passing=False, score=1.0), (1, 5), 0.0),
        (EvaluationResult(passing=True), (0, 1), 1.0),
        (EvaluationResult(passing=False), (1, 5), 0.0),
        (EvaluationResult(), (0, 1), None),
        (EvaluationResult(invalid_result=True, invalid_reason="no judge answer"), (0, 1), None),
    ],
)
def test_score_from_evaluation(
    result: EvaluationResult, scale: tuple[float, float], score: float | None
) -> None:
    assert score_from_evaluation(result, scale=scale) == score


def test_score_from_evaluation_refuses_a_score_outside_the_scale() -> None:
    with pytest.raises(ValueError, match=r"scale=\(1, 5\) for CorrectnessEvaluator"):
        score_from_evaluation(EvaluationResult(passing=True, score=4.5))
    with pytest.raises(ValueError, match="best > worst"):
        score_from_evaluation(EvaluationResult(score=0.5), scale=(1, 1))


# -- structured outputs -------------------------------------------------------------------------
@SIMULATOR
def test_structured_predictions_are_reported_as_llama_index_validates_them(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any, handler: KalibrEventHandler
) -> None:
    sim_env.set_script("extractor-wrong", ModelScript(accuracy=0.0))
    llm = make_llm("extract_company", ["gpt-4o-mini", "extractor-wrong"])

    right = llm.structured_predict(
        Company, PROMPT, llm_kwargs={"force_model": "gpt-4o-mini"}, message=EXAMPLE.sentence
    )
    with pytest.raises(ValueError, match="is not named in the message"):
        llm.structured_predict(
            Company, PROMPT, llm_kwargs={"force_model": "extractor-wrong"}, message=EXAMPLE.sentence
        )

    assert right == Company(company="Stripe")
    outcomes = [(o.model_id, o.success, o.failure_category) for o in stored("extract_company")]
    assert outcomes == [
        ("gpt-4o-mini", True, None),
        ("extractor-wrong", False, "validation_failed"),
    ]
    assert "is not named in the message" in (stored("extract_company")[1].failure_reason or "")


@SIMULATOR
@pytest.mark.asyncio
async def test_async_structured_predictions_are_reported(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any, handler: KalibrEventHandler
) -> None:
    llm = make_llm("aextract_company", ["claude-haiku-4-5"])
    assert await llm.astructured_predict(Company, PROMPT, message=EXAMPLE.sentence) == Company(
        company="Stripe"
    )
    assert [o.success for o in stored("aextract_company")] == [True]


@SIMULATOR
def test_structured_outputs_can_be_left_to_the_caller(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any, handler: KalibrEventHandler
) -> None:
    handler.structured_outputs = False
    llm = make_llm("extract_myself", ["gpt-4o-mini"])

    llm.structured_predict(Company, PROMPT, message=EXAMPLE.sentence)
    assert stored("extract_myself") == []
    llm.report(True, score=0.5)
    assert [o.score for o in stored("extract_myself")] == [0.5]


# -- queries ------------------------------------------------------------------------------------
@SIMULATOR
def test_concurrent_queries_each_report_only_their_own_calls(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any, handler: KalibrEventHandler
) -> None:
    engine = AskEngine(llm=make_llm("concurrent", ["gpt-4o-mini", "claude-haiku-4-5"]))
    questions = [f"What is {n} + {n}?" for n in range(8)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(engine.query, questions))
    reported = {
        q: handler.report_query(q, success=str(a) == str(2 * n), score=1.0)
        for n, (q, a) in enumerate(zip(questions, answers, strict=True))
    }

    assert all(len(trace_ids) == 1 for trace_ids in reported.values())
    assert len({t for ids in reported.values() for t in ids}) == 8
    assert all(o.success for o in stored("concurrent"))


@SIMULATOR
def test_a_failed_query_is_forgotten_and_does_not_swallow_later_calls(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any, handler: KalibrEventHandler
) -> None:
    llm = make_llm("failing_step", ["gpt-4o-mini"])

    with pytest.raises(RuntimeError):
        AskEngine(llm=llm, fail=True).query("What is 1 + 1?")
    answer = AskEngine(llm=llm).query("What is 2 + 2?")
    direct = llm.chat([ChatMessage(content="What is 3 + 3?")])

    with pytest.raises(NotFoundError):
        handler.report_query("What is 1 + 1?", success=False)
    [trace_id] = handler.report_query(answer, success=True)
    assert trace_id != direct.additional_kwargs["kalibr_trace_id"]
    assert [o.trace_id for o in stored("failing_step")] == [trace_id]


def test_queries_answered_by_other_llms_are_not_tracked(handler: KalibrEventHandler) -> None:
    AskEngine(llm=MockLLM()).query("What is 2 + 2?")
    with pytest.raises(NotFoundError, match="no finished query with routed calls"):
        handler.report_query("What is 2 + 2?", success=True)


@SIMULATOR
def test_an_invalid_evaluation_is_not_reported(
    sim_env: ProviderSimulator,
    make_llm: Any,
    stored: Any,
    handler: KalibrEventHandler,
    caplog: pytest.LogCaptureFixture,
) -> None:
    AskEngine(llm=make_llm("invalid_eval", ["gpt-4o-mini"])).query("What is 2 + 2?")
    invalid = EvaluationResult(
        query="What is 2 + 2?", invalid_result=True, invalid_reason="the judge timed out"
    )

    with caplog.at_level(logging.WARNING, logger="llama_index.llms.kalibr"):
        assert handler.report_evaluation(invalid) == []

    assert "the judge timed out" in caplog.text
    assert stored("invalid_eval") == []
    # The query is still there for a valid evaluation.
    valid = EvaluationResult(query="What is 2 + 2?", response="4", passing=False, feedback="no")
    assert len(handler.report_evaluation(valid)) == 1
    [outcome] = stored("invalid_eval")
    assert (outcome.success, outcome.score, outcome.failure_reason) == (False, 0.0, "no")


@SIMULATOR
def test_an_evaluation_matches_the_query_and_answer_it_judged(
    sim_env: ProviderSimulator, make_llm: Any, handler: KalibrEventHandler
) -> None:
    engine = AskEngine(llm=make_llm("matching", ["gpt-4o-mini"]))
    first = engine.query("What is 2 + 2?")
    second = engine.query("What is 2 + 2?")

    wrong_answer = EvaluationResult(query="What is 2 + 2?", response="5", passing=True)
    with pytest.raises(NotFoundError):
        handler.report_evaluation(wrong_answer)
    by_response = handler.report_evaluation(EvaluationResult(passing=True), response=first)
    latest = handler.report_evaluation(EvaluationResult(query="What is 2 + 2?", passing=True))

    assert str(first) == str(second) == "4"
    assert by_response != latest
    with pytest.raises(NotFoundError, match="reported once"):
        handler.report_evaluation(EvaluationResult(passing=True), response=second)
